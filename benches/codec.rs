//! Encode + decode of one frame (the Ready message of
//! tests/vectors/frames/09_ready.bin) through
//!
//! - A: the Rust API (`encode_frame_into` into a reused buffer, then
//!   `decode_frame`),
//! - B: the C ABI (`handoff_message_encode` into a reused buffer, then
//!   `handoff_message_decode` and `handoff_message_free`),
//! - R: beyond-handoff 0.1.4, for reference (`write_message` into a reused
//!   `Vec`, then `read_message`).
//!
//! Rounds are interleaved (A B R, then R B A, ...) so that frequency scaling
//! and neighbours' load hit every variant alike; the figures are medians of
//! the per-round ns/op. Goal: C/Rust <= 1.5.
//!
//! Environment: HANDOFF_BENCH_ROUNDS (default 41), HANDOFF_BENCH_ROUND_MS
//! (target duration of one round of one variant, default 20).

use std::hint::black_box;
use std::path::PathBuf;
use std::ptr;
use std::time::{Duration, Instant};

use handoff::ffi::{
    handoff_message, handoff_message_decode, handoff_message_encode, handoff_message_free,
    handoff_status,
};
use handoff::{decode_frame, encode_frame_into, Frame, Message};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One variant under test: a name and one encode+decode per call.
struct Variant<'a> {
    name: &'static str,
    op: Box<dyn FnMut() + 'a>,
    iters: u64,
    samples: Vec<f64>,
}

impl Variant<'_> {
    /// Time `iters` calls; ns per call.
    fn round(&mut self) -> f64 {
        let start = Instant::now();
        for _ in 0..self.iters {
            (self.op)();
        }
        start.elapsed().as_nanos() as f64 / self.iters as f64
    }

    /// Warm up for `warmup`, then pick the iteration count of one round.
    fn calibrate(&mut self, warmup: Duration, round: Duration) {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < warmup {
            (self.op)();
            calls += 1;
        }
        let per_call = start.elapsed().as_secs_f64() / calls as f64;
        self.iters = ((round.as_secs_f64() / per_call) as u64).max(100);
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// A: the Rust API.
fn rust_op<'a>(frame: &'a Frame, buf: &'a mut [u8]) -> impl FnMut() + 'a {
    move || {
        let n = encode_frame_into(frame.version, &frame.message, buf).expect("encode");
        let decoded = decode_frame(&buf[..n]).expect("decode");
        black_box(decoded);
    }
}

/// B: the C ABI, on a message built once by `handoff_message_decode`.
fn c_op(msg: *const handoff_message, buf: &mut [u8]) -> impl FnMut() + '_ {
    move || {
        let mut needed = 0usize;
        let mut out: *mut handoff_message = ptr::null_mut();
        let mut consumed = 0usize;
        // SAFETY: a live message, a buffer of `len` bytes, valid
        // out-parameters; the decoded message is freed at once.
        unsafe {
            let status = handoff_message_encode(
                msg,
                buf.as_mut_ptr(),
                buf.len(),
                &mut needed,
                ptr::null_mut(),
            );
            assert_eq!(status, handoff_status::HANDOFF_OK);
            let status = handoff_message_decode(
                buf.as_ptr(),
                needed,
                &mut out,
                &mut consumed,
                ptr::null_mut(),
            );
            assert_eq!(status, handoff_status::HANDOFF_OK);
            handoff_message_free(black_box(out));
        }
    }
}

/// R: the reference implementation.
fn their_op<'a>(
    version: u16,
    msg: &'a beyond::protocol::Message,
    buf: &'a mut Vec<u8>,
) -> impl FnMut() + 'a {
    move || {
        buf.clear();
        beyond::frame::write_message(buf, version, msg).expect("encode");
        let decoded = beyond::frame::read_message(&mut &buf[..]).expect("decode");
        black_box(decoded);
    }
}

fn main() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/frames/09_ready.bin");
    let vector = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rounds: usize = env_or("HANDOFF_BENCH_ROUNDS", 41);
    let round = Duration::from_millis(env_or("HANDOFF_BENCH_ROUND_MS", 20));

    // The message, three ways: ours, the C ABI's (decoded once from the
    // vector), the reference's.
    let (frame, _) = decode_frame(&vector).expect("the vector decodes");
    assert!(matches!(frame.message, Message::Ready { .. }));
    let mut c_msg: *mut handoff_message = ptr::null_mut();
    let mut consumed = 0usize;
    // SAFETY: `vector` holds `len` bytes; out-parameters are valid.
    let status = unsafe {
        handoff_message_decode(
            vector.as_ptr(),
            vector.len(),
            &mut c_msg,
            &mut consumed,
            ptr::null_mut(),
        )
    };
    assert_eq!(status, handoff_status::HANDOFF_OK);
    assert_eq!(consumed, vector.len());
    let (their_version, their_msg) =
        beyond::frame::read_message(&mut &vector[..]).expect("the reference decodes");

    // Each variant's buffer, reused across calls.
    let mut rust_buf = vec![0u8; 256];
    let mut c_buf = vec![0u8; 256];
    let mut their_buf: Vec<u8> = Vec::with_capacity(256);

    // Run each once and check it reproduces the vector.
    rust_op(&frame, &mut rust_buf)();
    c_op(c_msg, &mut c_buf)();
    their_op(their_version, &their_msg, &mut their_buf)();
    assert_eq!(
        &rust_buf[..vector.len()],
        &vector[..],
        "the Rust API re-encodes the vector"
    );
    assert_eq!(
        &c_buf[..vector.len()],
        &vector[..],
        "the C ABI re-encodes the vector"
    );
    assert_eq!(their_buf, vector, "the reference re-encodes the vector");

    let mut variants = vec![
        Variant {
            name: "rust",
            op: Box::new(rust_op(&frame, &mut rust_buf)),
            iters: 0,
            samples: Vec::new(),
        },
        Variant {
            name: "c-abi",
            op: Box::new(c_op(c_msg, &mut c_buf)),
            iters: 0,
            samples: Vec::new(),
        },
        Variant {
            name: "beyond",
            op: Box::new(their_op(their_version, &their_msg, &mut their_buf)),
            iters: 0,
            samples: Vec::new(),
        },
    ];

    for v in &mut variants {
        v.calibrate(Duration::from_millis(300), round);
    }
    let mut ratio_per_round = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let order: Vec<usize> = if r % 2 == 0 {
            vec![0, 1, 2]
        } else {
            vec![2, 1, 0]
        };
        let mut this_round = [0f64; 3];
        for i in order {
            let ns = variants[i].round();
            variants[i].samples.push(ns);
            this_round[i] = ns;
        }
        ratio_per_round.push(this_round[1] / this_round[0]);
    }

    println!(
        "codec: encode+decode of {} ({} bytes, Ready), {} interleaved rounds of ~{} ms each",
        path.file_name().unwrap().to_string_lossy(),
        vector.len(),
        rounds,
        round.as_millis()
    );
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "variant", "median", "min", "p10", "p90", "iters/round"
    );
    for v in &variants {
        println!(
            "{:<8} {:>7.1} ns {:>7.1} ns {:>7.1} ns {:>7.1} ns {:>12}",
            v.name,
            median(&v.samples),
            percentile(&v.samples, 0.0),
            percentile(&v.samples, 0.1),
            percentile(&v.samples, 0.9),
            v.iters
        );
    }
    let (rust, c, theirs) = (
        median(&variants[0].samples),
        median(&variants[1].samples),
        median(&variants[2].samples),
    );
    let ratio = c / rust;
    println!(
        "ratio C/Rust: {ratio:.3} (of medians), {:.3} (median of per-round ratios, p10 {:.3}, p90 {:.3}); goal <= 1.5: {}",
        median(&ratio_per_round),
        percentile(&ratio_per_round, 0.1),
        percentile(&ratio_per_round, 0.9),
        if ratio <= 1.5 { "met" } else { "NOT met" }
    );
    println!("ratio beyond/Rust: {:.3}", theirs / rust);

    drop(variants);
    // SAFETY: the message decoded above, freed once.
    unsafe { handoff_message_free(c_msg) };
}
