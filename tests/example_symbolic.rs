//! The symbolic executor example (`examples/symbolic.rs`), run small: the arena, the deep-cloned
//! and the `imbl` states find the same paths.

#[path = "../examples/symbolic.rs"]
#[allow(dead_code)]
mod symbolic;

#[test]
fn the_three_states_find_the_same_paths() {
    let paths = symbolic::explore_all(true);
    assert_eq!(paths[0], 32, "five independent branches");
    assert!(
        paths[1] > 5 && paths[1] < 32,
        "pairs: some paths infeasible: {}",
        paths[1]
    );
    assert_eq!(paths[2], 16, "four branches over a large memory");
}
