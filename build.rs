//! Declares the target capabilities the crate's `cfg`s select on, so that platform code is chosen
//! once here instead of by scattered `target_os` lists.
//!
//! - `cowarena_memfd`: anonymous sealable files (`memfd_create` + `F_ADD_SEALS`) back the page store.
//!   Elsewhere an unlinked temporary file does, without seals.

use std::env;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(cowarena_memfd)");
    println!("cargo::rerun-if-changed=build.rs");

    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(os.as_str(), "linux" | "android") {
        println!("cargo::rustc-cfg=cowarena_memfd");
    }
}
