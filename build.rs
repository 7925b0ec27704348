//! Declares the target capabilities the crate's `cfg`s select on, so that platform code is chosen
//! once here instead of by scattered `target_os` lists.
//!
//! - `cowarena_memfd`: anonymous sealable files (`memfd_create` + `F_ADD_SEALS`) back the page store.
//!   Elsewhere an unlinked temporary file does, without seals.
//! - `cowarena_pagemap_scan`: the `PAGEMAP_SCAN` ioctl number uses the generic `_IOC` encoding
//!   (true on x86-64 and aarch64, not on mips/powerpc/sparc), so the number computed in `sys` is right.
//!   Whether the running kernel has the ioctl (6.7+) is still checked at run time.

use std::env;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(cowarena_memfd)");
    println!("cargo::rustc-check-cfg=cfg(cowarena_pagemap_scan)");
    println!("cargo::rerun-if-changed=build.rs");

    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();

    if matches!(os.as_str(), "linux" | "android") {
        println!("cargo::rustc-cfg=cowarena_memfd");
        if matches!(
            arch.as_str(),
            "x86_64" | "aarch64" | "x86" | "arm" | "riscv64"
        ) {
            println!("cargo::rustc-cfg=cowarena_pagemap_scan");
        }
    }
}
