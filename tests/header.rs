//! include/handoff.h is checked in; it must be what build.rs generates from
//! the current sources. Run `make header` to refresh it.

#[test]
fn checked_in_header_matches_the_generated_one() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/handoff.h"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/handoff.h");
    let checked_in = std::fs::read_to_string(path).expect("include/handoff.h is missing");
    assert!(
        generated == checked_in,
        "include/handoff.h is out of date with the Rust sources: run `make header` and commit it"
    );
}
