//! The crate reads from the bottom up: every module uses only modules on lower floors of
//! `docs/layers.txt` (or its own floor, without a circle). This test reads the `crate::` paths of
//! every source file (comments and string literals skipped: a doc link is no dependency) and fails
//! on a use of a higher floor, a circle, or a module the file does not place.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// `text` without comments and string literals (char literals are kept; none holds a quote that
/// matters here).
fn code_of(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if text[i..].starts_with("//") {
            i = text[i..].find('\n').map_or(b.len(), |j| i + j);
        } else if text[i..].starts_with("/*") {
            i = text[i + 2..].find("*/").map_or(b.len(), |j| i + 2 + j + 2);
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            out.push_str("\"\"");
            i = j + 1;
        } else {
            let c = text[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The top-level names a `crate::` path at the start of `rest` reaches: `x` of `crate::x::...`,
/// or each first name of `crate::{a, b::{c}, d}`.
fn names_after_crate(rest: &str) -> Vec<String> {
    if let Some(group) = rest.strip_prefix('{') {
        let (mut depth, mut cur, mut names) = (0, String::new(), Vec::new());
        for ch in group.chars() {
            match ch {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    names.push(std::mem::take(&mut cur));
                    continue;
                }
                _ => {}
            }
            if depth == 0 {
                cur.push(ch);
            }
        }
        names.push(cur);
        names
            .iter()
            .filter_map(|n| n.split("::").next().map(|s| s.trim().to_string()))
            .filter(|n| !n.is_empty())
            .collect()
    } else {
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        vec![name]
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_use_only_lower_floors_and_form_no_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let mut floor = BTreeMap::new();
    let layers = fs::read_to_string(root.join("docs/layers.txt")).expect("docs/layers.txt");
    let mut level = 0;
    for line in layers.lines() {
        let names: Vec<&str> = line
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        for name in &names {
            floor.insert(name.to_string(), level);
        }
        level += usize::from(!names.is_empty());
    }
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let module_of = |path: &Path| {
        let first = path
            .strip_prefix(&src)
            .expect("under src")
            .components()
            .next();
        let name = first
            .expect("a component")
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        name.strip_suffix(".rs").map(str::to_string).unwrap_or(name)
    };
    let modules: BTreeSet<String> = files.iter().map(|p| module_of(p)).collect();
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &files {
        let me = module_of(path);
        let code = code_of(&fs::read_to_string(path).expect("read source"));
        for (at, _) in code.match_indices("crate::") {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            for target in names_after_crate(&code[at + "crate::".len()..]) {
                if modules.contains(&target) && target != me {
                    uses.entry(me.clone()).or_default().insert(target);
                }
            }
        }
    }
    let mut problems = Vec::new();
    for m in &modules {
        if !floor.contains_key(m) && m != "lib" {
            problems.push(format!("{m} is on no floor of docs/layers.txt"));
        }
    }
    for (a, targets) in &uses {
        for b in targets {
            if let (Some(fa), Some(fb)) = (floor.get(a), floor.get(b)) {
                if fb > fa {
                    problems.push(format!("{a} (floor {fa}) uses {b} (floor {fb}), above it"));
                }
            }
        }
    }
    // A circle needs a use that does not go down, so it lies within one floor: look for one
    // among the uses between modules of the same floor.
    fn reaches(
        uses: &BTreeMap<String, BTreeSet<String>>,
        from: &str,
        to: &str,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        uses.get(from)
            .into_iter()
            .flatten()
            .any(|next| next == to || (seen.insert(next.clone()) && reaches(uses, next, to, seen)))
    }
    for m in &modules {
        if reaches(&uses, m, m, &mut BTreeSet::new()) {
            problems.push(format!("{m} is part of an import circle"));
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_path_reader_sees_groups_and_skips_comments() {
    let code = code_of("use crate::{a, b::{c, d}, e::f}; // crate::g\nlet s = \"crate::h\";");
    let names: Vec<String> = code
        .match_indices("crate::")
        .flat_map(|(at, _)| names_after_crate(&code[at + 7..]))
        .collect();
    assert_eq!(names, ["a", "b", "e"]);
}
