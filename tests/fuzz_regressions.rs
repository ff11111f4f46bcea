//! The fuzz targets' checks (fuzz/src/lib.rs, included below) replayed on a
//! fixed corpus by `cargo test`, without libFuzzer or a nightly toolchain:
//! the golden vectors of tests/vectors, shaped as each target reads its
//! input, hand-made edge cases, every input in fuzz/regressions/TARGET/
//! (what the fuzzer once failed on; see docs/reliability.md) and the
//! minimised corpus in fuzz/seeds/TARGET/. Also the corpus Miri runs
//! (`make test-miri`, without the seeds).

#[allow(dead_code, clippy::all)]
#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files of `dir`, sorted, as (name, bytes); none if it is missing.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension() != Some("md".as_ref()))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// The 14 v1 message vectors, then the 6 of v2 (v2/ also holds INDEX.txt).
fn frames() -> Vec<(String, Vec<u8>)> {
    let mut frames = files(&root().join("tests/vectors/frames"));
    assert_eq!(frames.len(), 14, "the 14 v1 message vectors");
    let v2: Vec<_> = files(&root().join("tests/vectors/v2"))
        .into_iter()
        .filter(|(name, _)| name.ends_with(".bin"))
        .collect();
    assert_eq!(v2.len(), 6, "the 6 v2 message vectors");
    frames.extend(v2);
    frames
}

/// Frame-stream inputs: a first byte that chooses how the rest is cut (0:
/// byte by byte), then frames, as scripts/fuzz.sh seeds them.
fn streams() -> Vec<(String, Vec<u8>)> {
    let frames = frames();
    let mut inputs = Vec::new();
    for (name, bytes) in &frames {
        inputs.push((format!("{name} byte by byte"), [&[0u8][..], bytes].concat()));
        inputs.push((format!("{name} twice"), [&[7u8][..], bytes, bytes].concat()));
        // Cut short, and followed by a bad length (the reader poisons).
        let short = &bytes[..bytes.len() - 1];
        inputs.push((format!("{name} cut short"), [&[3u8][..], short].concat()));
        let poisoned = [&[9u8][..], bytes, &[0, 0, 0, 0, 1, 0]].concat();
        inputs.push((format!("{name} then length 0"), poisoned));
    }
    let all: Vec<u8> = frames.iter().flat_map(|(_, b)| b.clone()).collect();
    inputs.push(("all frames".into(), [&[3u8][..], &all].concat()));
    inputs.push((
        "bad body between good frames".into(),
        [
            &[1u8][..],
            &frames[13].1,
            &[3, 0, 0, 0, 1, 0, 99],
            &frames[13].1,
        ]
        .concat(),
    ));
    inputs.extend(edge_cases());
    inputs
}

/// Single-frame inputs that are not frames, or barely.
fn edge_cases() -> Vec<(String, Vec<u8>)> {
    let cases: [(&str, &[u8]); 7] = [
        ("empty", &[]),
        ("three bytes", &[1, 2, 3]),
        ("length 0", &[0, 0, 0, 0]),
        ("length 1", &[1, 0, 0, 0, 1]),
        ("length 2, no body", &[2, 0, 0, 0, 1, 0]),
        ("over the limit", &[1, 0, 0x10, 0, 1, 0]),
        ("u32::MAX", &[0xff, 0xff, 0xff, 0xff, 1, 0]),
    ];
    cases
        .iter()
        .map(|(name, bytes)| (name.to_string(), bytes.to_vec()))
        .collect()
}

/// fuzz/regressions/TARGET, and the minimised corpus fuzz/seeds/TARGET the
/// fuzzer grew (about 1,700 small inputs in all; left out under Miri, where
/// they would take hours).
fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut inputs = files(&root().join("fuzz/regressions").join(target));
    if !cfg!(miri) {
        inputs.extend(files(&root().join("fuzz/seeds").join(target)));
    }
    inputs
}

fn replay(target: &str, inputs: Vec<(String, Vec<u8>)>, check: fn(&[u8])) {
    let count = inputs.len();
    for (name, bytes) in inputs {
        let replayed = std::panic::catch_unwind(|| check(&bytes));
        assert!(replayed.is_ok(), "{target} failed on {name}: {bytes:02x?}");
    }
    eprintln!("{target}: {count} inputs replayed");
}

#[test]
fn message_decode_corpus() {
    let mut inputs = frames();
    inputs.extend(edge_cases());
    inputs.extend(regressions("message_decode"));
    replay("message_decode", inputs, checks::message_decode);
}

#[test]
fn frame_reader_corpus() {
    let mut inputs = streams();
    inputs.extend(regressions("frame_reader"));
    replay("frame_reader", inputs, checks::frame_reader);
}

#[test]
fn journal_read_corpus() {
    let mut inputs = files(&root().join("tests/vectors/journal"));
    assert_eq!(inputs.len(), 6, "the 6 journal vectors");
    let truncated: Vec<_> = inputs
        .iter()
        .map(|(name, bytes)| {
            (
                format!("{name} truncated"),
                bytes[..bytes.len() - 1].to_vec(),
            )
        })
        .collect();
    inputs.extend(truncated);
    inputs.extend(edge_cases());
    inputs.extend(regressions("journal_read"));
    replay("journal_read", inputs, checks::journal_read);
}

#[test]
fn ffi_decode_corpus() {
    let mut inputs = frames();
    inputs.extend(streams());
    inputs.extend(regressions("ffi_decode"));
    replay("ffi_decode", inputs, checks::ffi_decode);
}
