//! Sets the shared library's soname and generates the C header with
//! cbindgen into OUT_DIR. `include/handoff.h` is the checked-in copy; a test
//! fails when the two differ, and `make header` refreshes it.

use std::env;
use std::path::PathBuf;

fn main() {
    // The ABI is 0.x: consumers link against libhandoff.so.0.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libhandoff.so.0");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=HANDOFF_WRITE_HEADER");

    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo")).join("handoff.h");
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        // Only the C ABI module: the Rust core's own items are not C's business.
        .with_src(crate_dir.join("src/ffi/mod.rs"))
        .with_config(config)
        .generate()
        .expect("generate include/handoff.h");
    bindings.write_to_file(&out);
    // `make header` sets this to refresh the checked-in copy.
    if env::var_os("HANDOFF_WRITE_HEADER").is_some() {
        bindings.write_to_file(crate_dir.join("include/handoff.h"));
    }
}
