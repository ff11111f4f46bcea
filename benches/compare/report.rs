//! docs/benchmarks.md and docs/benchmarks.svg from the results (JSON).

use std::fmt::Write;

use serde_json::Value;

const LABELS: [(&str, &str); 8] = [
    ("libhandoff-c", "libhandoff (kv-c)"),
    ("libhandoff-go", "libhandoff (kv-go)"),
    ("libhandoff-cpp", "libhandoff (kv-cpp)"),
    ("libhandoff-rust", "libhandoff (kv-rust)"),
    ("baseline-c", "libhandoff baseline build (kv-c)"),
    ("beyond", "beyond-handoff 0.1.4"),
    ("tableflip", "tableflip v1.2.3"),
    ("restart", "plain restart"),
];

/// The libhandoff services the goals are about (not a baseline build).
const OURS: [&str; 4] = [
    "libhandoff-c",
    "libhandoff-go",
    "libhandoff-cpp",
    "libhandoff-rust",
];

fn label(name: &str) -> &str {
    LABELS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(name, |(_, l)| l)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn num(v: &Value) -> String {
    match v {
        Value::Null => "–".into(),
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if x.abs() >= 100.0 {
                format!("{x:.0}")
            } else if x.abs() >= 10.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.2}")
            }
        }
        other => other.to_string(),
    }
}

/// A ratio as `1.23×`, or `–` when it was not measured.
fn times(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.is_finite() => format!("{x:.2}×"),
        _ => "–".into(),
    }
}

/// The persistent clients' p99 during the handoffs ÷ their steady p99.
fn persistent_ratio(system: &Value) -> f64 {
    f(&system["persistent"]["p99_during_ms"]) / f(&system["persistent"]["p99_steady_ms"])
}

fn failures_cell(failures: &Value) -> String {
    let total = failures["total"].as_u64().unwrap_or(0);
    if total == 0 {
        return "**0**".into();
    }
    let kinds: Vec<String> = failures["by_kind"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{v} {k}")).collect())
        .unwrap_or_default();
    format!("{total} ({})", kinds.join(", "))
}

/// How much the supervisor's resident set may grow from after the warm-up
/// to the last handoff and still count as flat (issue 17's goal).
const FLAT_RSS_KIB: f64 = 64.0;

fn drift(system: &Value, field: &str) -> Option<(f64, f64, f64)> {
    let samples = system["handoffs"]["drift"].as_array()?;
    let first = samples.first()?;
    let warm = samples.iter().find(|s| s["at"] == "warm").unwrap_or(first);
    let last = samples.last()?;
    Some((f(&first[field]), f(&warm[field]), f(&last[field])))
}

fn highest_zero_error_rate(system: &Value) -> Option<(f64, f64)> {
    system["ramp"]
        .as_array()?
        .iter()
        .filter(|r| {
            r["zero_errors"] == true && f(&r["achieved_per_s"]) >= 0.9 * f(&r["target_per_s"])
        })
        .map(|r| (f(&r["target_per_s"]), f(&r["achieved_per_s"])))
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

fn find<'a>(results: &'a Value, name: &str) -> Option<&'a Value> {
    results["systems"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name && s.get("error").is_none())
}

/// One line for the terminal.
pub fn summary(results: &Value) -> String {
    let mut out = String::new();
    for s in results["systems"].as_array().into_iter().flatten() {
        if let Some(e) = s.get("error") {
            let _ = writeln!(out, "{:<14} error: {e}", s["name"].as_str().unwrap_or("?"));
            continue;
        }
        let h = &s["handoffs"];
        let p = &s["persistent"];
        let _ = writeln!(
            out,
            "{:<14} {}/{} handoffs, {} failed requests, {} lost writes, duration p50 {} ms p99 {} ms, gap max {} ms, p99 steady {} ms during {} ms; \
             persistent clients: {} kept connections closed, {} resent, p99 steady {} ms during {} ms ({})",
            s["name"].as_str().unwrap_or("?"),
            h["committed"],
            h["attempted"],
            h["failures"]["total"],
            num(&h["writes"]["lost"]),
            num(&h["duration"]["p50_ms"]),
            num(&h["duration"]["p99_ms"]),
            num(&h["gap"]["max_ms"]),
            num(&s["steady"]["latency"]["p99_ms"]),
            num(&h["latency_during"]["p99_ms"]),
            num(&p["kept_closed"]),
            num(&p["resent"]),
            num(&p["p99_steady_ms"]),
            num(&p["p99_during_ms"]),
            times(&p["p99_during_over_steady"]),
        );
    }
    out
}

pub fn render(results: &Value, analysis: Option<&str>) -> (String, String) {
    let systems: Vec<&Value> = results["systems"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let ok: Vec<&Value> = systems
        .iter()
        .copied()
        .filter(|s| s.get("error").is_none())
        .collect();
    let o = &results["options"];
    let m = &results["machine"];
    let k = o["handoffs"].as_u64().unwrap_or(0);
    let rate = ok.first().map_or(f64::NAN, |s| f(&s["rate"]));
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks: handoff libraries under load\n");
    let _ = writeln!(
        md,
        "<!-- Generated by benches/compare (`make bench`) from one run; the analysis \
         section comes from benches/compare/analysis.md. Do not edit by hand. -->\n"
    );
    // Headline.
    if let Some(c) = find(results, "libhandoff-c") {
        let h = &c["handoffs"];
        let mut line = format!(
            "**Headline.** Over {} consecutive handoffs under {:.0} requests/s of closed-loop load, \
             libhandoff (the C example service) failed {} requests and lost {} of {} acknowledged writes; \
             the handoffs closed {} of its persistent clients' connections ({} requests resent); \
             a handoff took {} ms at the median (p99 {} ms)",
            h["committed"],
            rate,
            h["failures"]["total"],
            num(&h["writes"]["lost"]),
            h["writes"]["acknowledged"],
            num(&c["persistent"]["kept_closed"]),
            num(&c["persistent"]["resent"]),
            num(&h["duration"]["p50_ms"]),
            num(&h["duration"]["p99_ms"]),
        );
        let others: Vec<String> = ["beyond", "tableflip"]
            .iter()
            .filter_map(|n| find(results, n))
            .map(|s| {
                format!(
                    "{} {} ms with {} failed requests",
                    label(s["name"].as_str().unwrap_or("")),
                    num(&s["handoffs"]["duration"]["p50_ms"]),
                    s["handoffs"]["failures"]["total"]
                )
            })
            .collect();
        if !others.is_empty() {
            let _ = write!(line, " (in the same run: {})", others.join("; "));
        }
        if let Some(r) = find(results, "restart") {
            let _ = write!(
                line,
                ", while a plain restart of the same service failed {} requests",
                r["handoffs"]["failures"]["total"]
            );
        }
        let _ = writeln!(md, "{line}.\n");
    }
    let _ = writeln!(
        md,
        "![handoff duration, latency and failures per system](benchmarks.svg)\n"
    );

    // The table.
    let _ = writeln!(md, "## Results\n");
    let _ = writeln!(
        md,
        "{k} handoffs per system, one every {} ms, under {:.0} requests/s ({}% of what the first system sustained \
         flat out without handoffs) from {} fresh-connection and {} persistent clients; the systems ran one after \
         the other in one run (definitions [below](#how-it-was-measured)).\n",
        num(&o["interval_ms"]),
        rate,
        (f(&o["load"]) * 100.0).round(),
        o["fresh"],
        o["persistent"],
    );
    let mut header = String::from("| |");
    let mut rule = String::from("|---|");
    for s in &systems {
        let _ = write!(header, " {} |", label(s["name"].as_str().unwrap_or("?")));
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    let row = |md: &mut String, title: &str, cell: &dyn Fn(&Value) -> String| {
        let mut line = format!("| {title} |");
        for s in &systems {
            let text = if s.get("error").is_some() {
                "error".to_string()
            } else {
                cell(s)
            };
            let _ = write!(line, " {text} |");
        }
        let _ = writeln!(md, "{line}");
    };
    row(&mut md, "handoffs committed", &|s| {
        format!(
            "{}/{}",
            s["handoffs"]["committed"], s["handoffs"]["attempted"]
        )
    });
    row(
        &mut md,
        "handoffs rolled back, then triggered again",
        &|s| s["handoffs"]["rollbacks"].to_string(),
    );
    row(&mut md, "failed requests", &|s| {
        failures_cell(&s["handoffs"]["failures"])
    });
    row(&mut md, "acknowledged writes lost", &|s| {
        format!(
            "**{}** of {} ({} keys read back)",
            num(&s["handoffs"]["writes"]["lost"]),
            s["handoffs"]["writes"]["acknowledged"],
            s["handoffs"]["writes"]["keys"]
        )
    });
    row(&mut md, "requests (persistent resends)", &|s| {
        format!(
            "{} ({})",
            s["handoffs"]["requests"], s["handoffs"]["resent"]
        )
    });
    row(
        &mut md,
        "kept connections closed by the handoffs (persistent clients)",
        &|s| {
            let closed = &s["persistent"]["kept_closed"];
            if closed.as_u64() == Some(0) {
                "**0**".into()
            } else {
                num(closed)
            }
        },
    );
    row(
        &mut md,
        "persistent clients' p99 steady / during handoffs, ms (ratio)",
        &|s| {
            let p = &s["persistent"];
            format!(
                "{} / {} ({})",
                num(&p["p99_steady_ms"]),
                num(&p["p99_during_ms"]),
                times(&p["p99_during_over_steady"])
            )
        },
    );
    row(&mut md, "handoff duration p50 / p99 / max, ms", &|s| {
        let d = &s["handoffs"]["duration"];
        format!(
            "{} / {} / {}",
            num(&d["p50_ms"]),
            num(&d["p99_ms"]),
            num(&d["max_ms"])
        )
    });
    row(
        &mut md,
        "duration p50 over the first tenth of the handoffs, ms",
        &|s| num(&s["handoffs"]["duration"]["first_tenth_p50_ms"]),
    );
    row(
        &mut md,
        "duration fit: ms at an empty log + ms per 100k records replayed",
        &|s| {
            let fit = &s["handoffs"]["by_log_size"];
            if fit.is_null() {
                return "–".into();
            }
            format!(
                "{} + {} (log {} → {} records)",
                num(&fit["intercept_ms"]),
                num(&fit["ms_per_100k_records"]),
                num(&fit["records_first"]),
                num(&fit["records_last"])
            )
        },
    );
    row(&mut md, "longest accept gap p50 / max, ms", &|s| {
        let g = &s["handoffs"]["gap"];
        format!("{} / {}", num(&g["p50_ms"]), num(&g["max_ms"]))
    });
    row(&mut md, "latency steady p50 / p99 / max, ms", &|s| {
        let l = &s["steady"]["latency"];
        format!(
            "{} / {} / {}",
            num(&l["p50_ms"]),
            num(&l["p99_ms"]),
            num(&l["max_ms"])
        )
    });
    row(
        &mut md,
        "latency during handoffs p50 / p99 / max, ms",
        &|s| {
            let l = &s["handoffs"]["latency_during"];
            format!(
                "{} / {} / {}",
                num(&l["p50_ms"]),
                num(&l["p99_ms"]),
                num(&l["max_ms"])
            )
        },
    );
    row(&mut md, "p99 during handoffs ÷ steady p99", &|s| {
        format!(
            "{:.2}×",
            f(&s["handoffs"]["latency_during"]["p99_ms"]) / f(&s["steady"]["latency"]["p99_ms"])
        )
    });
    row(
        &mut md,
        "supervisor descriptors: start → after warm-up → end",
        &|s| match drift(s, "fds") {
            Some((a, b, c)) => format!("{a} → {b} → {c}"),
            None => "no supervisor".into(),
        },
    );
    row(
        &mut md,
        "supervisor RSS, KiB: start → after warm-up → end",
        &|s| match drift(s, "rss_kib") {
            Some((a, b, c)) => format!("{a} → {b} → {c}"),
            None => "no supervisor".into(),
        },
    );
    row(
        &mut md,
        "highest handoff rate with zero errors",
        &|s| match highest_zero_error_rate(s) {
            Some((target, achieved)) => format!("{target}/s (achieved {achieved:.1}/s)"),
            None => "none of the ramp".into(),
        },
    );
    row(&mut md, "throughput flat out, no handoff (req/s)", &|s| {
        format!("{:.0}", f(&s["calibration"]["throughput"]))
    });
    row(&mut md, "throughput during the handoff run (req/s)", &|s| {
        format!("{:.0}", f(&s["handoffs"]["throughput"]))
    });
    let _ = writeln!(md);

    // Phases.
    let _ = writeln!(md, "### Where a handoff's time goes (median / p99, ms)\n");
    for s in &ok {
        let phases: Vec<String> = s["handoffs"]["phases"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{} {} / {}",
                    p["name"].as_str().unwrap_or("?"),
                    num(&p["p50_ms"]),
                    num(&p["p99_ms"])
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "- {}: {}",
            label(s["name"].as_str().unwrap_or("?")),
            phases.join(" · ")
        );
    }
    let _ = writeln!(
        md,
        "\nlibhandoff's phases are its supervisor's own report (`handoff-supervisor trigger` prints the same); \
         the others' are read from their processes' log lines (draining, sealed, took over), timed as the harness \
         read them.\n"
    );

    // Ramp.
    let _ = writeln!(md, "### Handoff rate ramp\n");
    let _ = writeln!(
        md,
        "{} handoffs at each rate under the same load; a cell is the rate achieved, ✓ when no request failed \
         and no acknowledged write was lost.\n",
        o["ramp_handoffs"]
    );
    let mut header = String::from("| rate asked |");
    let mut rule = String::from("|---|");
    for s in &ok {
        let _ = write!(header, " {} |", label(s["name"].as_str().unwrap_or("?")));
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    for (i, r) in o["ramp"].as_array().into_iter().flatten().enumerate() {
        let mut line = format!("| {}/s |", num(r));
        for s in &ok {
            let cell = match s["ramp"].get(i) {
                Some(step) if step["zero_errors"] == true => {
                    let rollbacks = step["rollbacks"].as_u64().unwrap_or(0);
                    if rollbacks > 0 {
                        format!(
                            "{:.1}/s ✓ ({rollbacks} rolled back)",
                            f(&step["achieved_per_s"])
                        )
                    } else {
                        format!(
                            "{:.1}/s ✓ (p50 {} ms)",
                            f(&step["achieved_per_s"]),
                            num(&step["duration_p50_ms"])
                        )
                    }
                }
                Some(step) => format!(
                    "{:.1}/s ✗ {} failed, {} lost",
                    f(&step["achieved_per_s"]),
                    step["failures"],
                    num(&step["lost"])
                ),
                None => "–".into(),
            };
            let _ = write!(line, " {cell} |");
        }
        let _ = writeln!(md, "{line}");
    }
    let _ = writeln!(md);

    // Goals.
    let _ = writeln!(md, "## Goals\n");
    let ours: Vec<&Value> = OURS.iter().filter_map(|n| find(results, n)).collect();
    let _ = writeln!(
        md,
        "| goal | measured ({}) | verdict |\n|---|---|---|",
        ours.iter()
            .map(|s| label(s["name"].as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let verdict = |ok: bool| if ok { "met" } else { "**missed**" };
    if !ours.is_empty() {
        let zero = ours.iter().all(|s| {
            s["handoffs"]["failures"]["total"] == 0
                && s["handoffs"]["writes"]["lost"] == 0
                && s["handoffs"]["committed"] == s["handoffs"]["attempted"]
        });
        let measured: Vec<String> = ours
            .iter()
            .map(|s| {
                format!(
                    "{} failed, {} lost over {} handoffs",
                    s["handoffs"]["failures"]["total"],
                    num(&s["handoffs"]["writes"]["lost"]),
                    s["handoffs"]["committed"]
                )
            })
            .collect();
        // The handoffs actually done (a time budget may have cut K short).
        let done = ours
            .iter()
            .map(|s| s["handoffs"]["attempted"].as_u64().unwrap_or(0))
            .min()
            .unwrap_or(0);
        let scale = if done >= 1000 {
            String::new()
        } else {
            format!(" ({done} handoffs, not 1,000: not the goal's scale)")
        };
        let _ = writeln!(
            md,
            "| 0 failed requests, 0 lost acknowledged writes over 1,000 handoffs at 80% load | {}{scale} | {} |",
            measured.join("; "),
            verdict(zero && done >= 1000)
        );
        let ratios: Vec<f64> = ours
            .iter()
            .map(|s| {
                f(&s["handoffs"]["latency_during"]["p99_ms"]) / f(&s["steady"]["latency"]["p99_ms"])
            })
            .collect();
        let _ = writeln!(
            md,
            "| p99 during handoffs ≤ 2× steady p99 | {} | {} |",
            ours.iter()
                .zip(&ratios)
                .map(|(s, r)| format!(
                    "{} ms vs {} ms: {r:.2}×",
                    num(&s["handoffs"]["latency_during"]["p99_ms"]),
                    num(&s["steady"]["latency"]["p99_ms"])
                ))
                .collect::<Vec<_>>()
                .join("; "),
            verdict(ratios.iter().all(|r| *r <= 2.0))
        );
        let kept: Vec<String> = ours
            .iter()
            .map(|s| {
                format!(
                    "{} closed, {} resent",
                    num(&s["persistent"]["kept_closed"]),
                    num(&s["persistent"]["resent"])
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "| no kept connection closed by a handoff (persistent clients: 0 closed, 0 resent) | {} | {} |",
            kept.join("; "),
            verdict(ours.iter().all(|s| {
                s["persistent"]["kept_closed"].as_u64() == Some(0)
                    && s["persistent"]["resent"].as_u64() == Some(0)
            }))
        );
        let persistent: Vec<f64> = ours.iter().map(|s| persistent_ratio(s)).collect();
        let _ = writeln!(
            md,
            "| persistent clients' p99 during handoffs ≤ 2× their steady p99 | {} | {} |",
            ours.iter()
                .zip(&persistent)
                .map(|(s, r)| format!(
                    "{} ms vs {} ms: {r:.2}×",
                    num(&s["persistent"]["p99_during_ms"]),
                    num(&s["persistent"]["p99_steady_ms"])
                ))
                .collect::<Vec<_>>()
                .join("; "),
            verdict(persistent.iter().all(|r| *r <= 2.0))
        );
        let theirs: Vec<(String, f64)> = ["beyond", "tableflip"]
            .iter()
            .filter_map(|n| find(results, n))
            .map(|s| {
                (
                    label(s["name"].as_str().unwrap_or("")).to_string(),
                    f(&s["handoffs"]["duration"]["p50_ms"]),
                )
            })
            .collect();
        let fastest = theirs.iter().map(|(_, d)| *d).fold(f64::INFINITY, f64::min);
        let durations: Vec<f64> = ours
            .iter()
            .map(|s| f(&s["handoffs"]["duration"]["p50_ms"]))
            .collect();
        let _ =
            writeln!(
            md,
            "| handoff duration (p50) ≤ beyond-handoff's and tableflip's | ours {} ms; {} | {} |",
            durations.iter().map(|d| format!("{d:.2}")).collect::<Vec<_>>().join(" / "),
            theirs.iter().map(|(n, d)| format!("{n} {d:.2} ms")).collect::<Vec<_>>().join(", "),
            verdict(durations.iter().all(|d| *d <= fastest))
        );
        let rates: Vec<Option<(f64, f64)>> =
            ours.iter().map(|s| highest_zero_error_rate(s)).collect();
        let _ = writeln!(
            md,
            "| ≥ 10 handoffs/s sustained with zero errors | {} | {} |",
            rates
                .iter()
                .map(|r| match r {
                    Some((t, a)) => format!("{t}/s asked, {a:.1}/s achieved"),
                    None => "no rate of the ramp".into(),
                })
                .collect::<Vec<_>>()
                .join("; "),
            verdict(
                rates
                    .iter()
                    .all(|r| r.is_some_and(|(t, a)| t >= 10.0 && a >= 9.0))
            )
        );
        let growth: Vec<String> = ours
            .iter()
            .map(|s| match (drift(s, "fds"), drift(s, "rss_kib")) {
                (Some((_, fw, fe)), Some((_, rw, re))) => {
                    format!("descriptors {fw} → {fe}, RSS {rw} → {re} KiB after warm-up")
                }
                _ => "not measured".into(),
            })
            .collect();
        let flat = ours
            .iter()
            .all(|s| match (drift(s, "fds"), drift(s, "rss_kib")) {
                (Some((_, fw, fe)), Some((_, rw, re))) => fe <= fw && re <= rw + FLAT_RSS_KIB,
                _ => false,
            });
        let _ =
            writeln!(
            md,
            "| no descriptor or memory growth in the supervisor over 1,000 handoffs | {}{} | {} |",
            growth.join("; "),
            if done >= 1000 { "" } else { " (fewer than 1,000 handoffs)" },
            verdict(flat && done >= 1000)
        );
        let series: Vec<String> = ours
            .iter()
            .copied()
            .chain(find(results, "beyond"))
            .map(|s| {
                let points: Vec<String> = s["handoffs"]["drift"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| format!("{}: {}, {}", p["after_handoffs"], p["fds"], p["rss_kib"]))
                    .collect();
                format!(
                    "{}: {}",
                    label(s["name"].as_str().unwrap_or("?")),
                    points.join("; ")
                )
            })
            .collect();
        let _ = writeln!(
            md,
            "\nSupervisor samples (after N handoffs: descriptors, RSS KiB), {}.",
            series.join(". ")
        );
        let _ = writeln!(
            md,
            "\nMemory counts as flat when the resident set after the last handoff is within {FLAT_RSS_KIB} KiB of \
             the one after the warm-up handoffs (the first {}), and descriptors as constant when there are no more \
             at the end than after the warm-up.\n",
            (k / 10).clamp(1, 10)
        );
    }
    if let Some(text) = analysis {
        let _ = writeln!(md, "{}\n", text.trim_end());
    }

    // How.
    let _ = writeln!(md, "## How it was measured\n");
    let _ = writeln!(md, "Reproduce with `{}` (the numbers above; `make bench` alone is a quick run that writes to target/bench/ instead of docs/).\n", results["command"].as_str().unwrap_or("make bench"));
    let _ = writeln!(
        md,
        "- Machine: {} CPUs ({}), {} GiB, Linux {}; data directories and journals on {} (one fdatasync of a small \
         append: {} µs); {}; {}.",
        m["nproc"],
        m["cpu"].as_str().unwrap_or("?"),
        m["memory_gib"],
        m["kernel"].as_str().unwrap_or("?"),
        m["filesystem"].as_str().unwrap_or("?"),
        num(&m["fsync_us"]),
        m["rustc"].as_str().unwrap_or("?"),
        m["go"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        md,
        "- Run: tree {}, started {}, took {} s; load average (1, 5, 15 min) {} at the start, {} at the end.",
        m["commit"].as_str().unwrap_or("?"),
        m["started_utc"].as_str().unwrap_or("?"),
        m["duration_s"],
        m["loadavg_start"].as_str().unwrap_or("?"),
        m["loadavg_end"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        md,
        "- Load: benches/compare/loadgen.rs, the demo's load generator (examples/demo/loadgen.py) with the same \
         semantics, compiled: fresh clients open a connection per request (refused, reset, no answer within 5 s: \
         a failure); persistent clients keep theirs and, when the server closes it between requests (a drain \
         does), reconnect and resend once (a resend, not a failure); every client alternates `SET` and `GET` on \
         256 keys of its own, round robin, a new value each time, and checks each answer; at the end of each part \
         of the run every key is read back (lost: a key that no longer holds its last acknowledged value, nor one \
         written after it by a `SET` that failed). Keys are overwritten, so the logs are mostly dead records, which \
         the services compact when they open them (examples/README.md, Compaction): the state stays the same size \
         however many handoffs run. The Python one is held to one core by the GIL and saturates \
         before the services do. Clients are paced to an equal share of the rate, closed loop (one request \
         outstanding each; a late client sends at once and does not catch up). Calibration runs them flat out for \
         {} s per system; the rate is {}% of the first system's.",
        num(&o["calibrate_secs"]),
        (f(&o["load"]) * 100.0).round()
    );
    let _ = writeln!(
        md,
        "- Handoff duration: from the trigger leaving the harness to the system reporting the new process in charge: \
         libhandoff, the supervisor's `committed` on its trigger socket (Ready received, Commit sent); \
         beyond-handoff, `perform_handoff` returning in bench-beyond-supervisor (the same point of its protocol); \
         tableflip, the new generation's `took over` line (log replayed, accepting), SIGHUP being the trigger; \
         plain restart, SIGTERM to the new process's `cold start` line."
    );
    let _ = writeln!(
        md,
        "- A handoff that rolls back (the incumbent keeps serving) is triggered again, up to 20 times, as an \
         operator would; its duration counts from the first trigger, and the rollbacks are counted."
    );
    let _ = writeln!(
        md,
        "- Longest accept gap: around each handoff, the longest interval in which no fresh-connection request \
         completed successfully, from the last completion before the trigger to the first after the commit \
         (client side: a connection the kernel queued but nobody accepted does not count)."
    );
    let _ = writeln!(
        md,
        "- Latency: request start to answer. Steady state: {} s of the same paced load with no handoff. During \
         handoffs: the requests whose lifetime overlaps a handoff's trigger-to-commit window.",
        num(&o["steady_secs"])
    );
    let _ = writeln!(
        md,
        "- Kept connections closed by the handoffs: every time the server closed or reset a persistent client's \
         connection during the K handoffs (end of file, ECONNRESET or EPIPE on a request, resent or not, or \
         found by a last non-blocking look at each kept connection when the load stops), counted apart from \
         the resends (a resend follows a close of a connection that had served a request; a close of the new \
         connection it opened is counted too, and is a failure). A handoff that moves connections (libhandoff's \
         protocol v2, when both the incumbent's service and the successor's move them) closes none; one that \
         drains them (protocol v1, the other libraries, a restart) closes each persistent client's connection \
         once per handoff. Persistent \
         clients' p99: the same latency as above, of the persistent clients' requests only (a resend's \
         reconnection included), steady state against during handoffs; the goal is a ratio of at most 2."
    );
    let _ = writeln!(
        md,
        "- Supervisor drift: descriptors in /proc/PID/fd and VmRSS of handoff-supervisor and of \
         bench-beyond-supervisor before the first handoff, after the warm-up handoffs, every 100 handoffs and \
         after the last. tableflip and the plain restart have no supervisor: every generation is a new process."
    );
    let _ = writeln!(
        md,
        "- Highest handoff rate: the ramp triggers handoffs at each rate (the next one as soon as the previous \
         committed when it is late); the highest rate with zero failed requests, zero lost writes, every handoff \
         committed and at least 90% of the rate achieved."
    );
    let _ = writeln!(md, "\nThe systems, each with the same line protocol and durability (fsync before `OK`, group commit):\n");
    let _ = writeln!(
        md,
        "- libhandoff: `handoff-supervisor run` with examples/c (kv-c) or examples/go (kv-go); the supervisor keeps \
         the listener, spawns the successor, drains and seals the incumbent, lets the successor take the data-dir \
         lock, and commits on Ready (docs/systemd.md, examples/README.md).\n\
         - beyond-handoff 0.1.4: benches/services/beyond_kv.rs on the crate's Incumbent/Successor API and \
         benches/services/beyond_supervisor.rs around its `Supervisor` (journal on the same filesystem); the same \
         protocol, so the same phases.\n\
         - tableflip v1.2.3: benches/tableflip (Go). SIGHUP makes the process in charge fork the same binary with \
         the listener; the child preloads the log and calls Ready, which ends the parent's Upgrade; the parent \
         then stops accepting, drains, fsyncs and closes its log and releases a flock on the data directory; the \
         child, blocked on that flock, replays what was appended since its preload and accepts. Connections wait \
         in the listener's queue meanwhile. \
         tableflip refuses an upgrade while the previous generation is alive, so the next handoff waits for it.\n\
         - plain restart: kv-c alone, SIGTERM, wait for its exit, start it again on a fresh bind of the same port: \
         connections in between are refused, kept ones are closed."
    );
    let _ = writeln!(
        md,
        "\nThe example services keep an append-only log, which they compact when they open it once it holds \
         65,536 records and twice as many as its keys (examples/README.md, \"Compaction\"; with 256 keys a client \
         the state stays the same size however many handoffs run). A successor replays it read-only before its \
         handshake (tableflip: before Ready), while the incumbent still serves, and after the seal and the lock \
         only replays what was appended since (examples/README.md, \"Successor\"), then compacts it if due: the \
         handoffs that compact take longer by the time to write and fsync the live keys. Every service here does the \
         same on the same records (the bench services write kv.log's binary format of examples/README.md, \
         CRC-32C included, with kv-c's hash table design), and each part of a system's run (steady state, the \
         K handoffs, each rate of the ramp) starts on an empty data directory."
    );
    (md, svg(&ok, k))
}

/// A panel: title, two series (name, colour), the two values of a system.
type Panel<'a> = (
    &'a str,
    [(&'a str, &'a str); 2],
    Box<dyn Fn(&Value) -> [f64; 2]>,
);

/// Three panels of horizontal bars: handoff duration p50/p99, latency p99
/// steady/during, failed requests.
fn svg(systems: &[&Value], k: u64) -> String {
    let names: Vec<&str> = systems
        .iter()
        .map(|s| label(s["name"].as_str().unwrap_or("?")))
        .collect();
    let panels: [Panel; 3] = [
        (
            "handoff duration, ms",
            [("p50", "#2b6cb0"), ("p99", "#90cdf4")],
            Box::new(|s: &Value| {
                [
                    f(&s["handoffs"]["duration"]["p50_ms"]),
                    f(&s["handoffs"]["duration"]["p99_ms"]),
                ]
            }),
        ),
        (
            "request latency p99, ms",
            [("steady", "#2f855a"), ("during handoffs", "#9ae6b4")],
            Box::new(|s: &Value| {
                [
                    f(&s["steady"]["latency"]["p99_ms"]),
                    f(&s["handoffs"]["latency_during"]["p99_ms"]),
                ]
            }),
        ),
        (
            "failed requests / lost writes",
            [("failed", "#c53030"), ("lost", "#feb2b2")],
            Box::new(|s: &Value| {
                [
                    f(&s["handoffs"]["failures"]["total"]),
                    f(&s["handoffs"]["writes"]["lost"]),
                ]
            }),
        ),
    ];
    let (label_w, panel_w, row_h, top) = (170.0, 270.0, 34.0, 56.0);
    let width = label_w + 3.0 * (panel_w + 20.0) + 10.0;
    let height = top + row_h * systems.len() as f64 + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="10" y="18" font-size="14" font-weight="bold">{k} handoffs per system under the same load (docs/benchmarks.md)</text>"#
    );
    for (i, name) in names.iter().enumerate() {
        let y = top + row_h * i as f64 + row_h / 2.0 + 4.0;
        let _ = writeln!(out, r#"<text x="10" y="{y:.1}">{name}</text>"#);
    }
    for (p, (title, series, value)) in panels.iter().enumerate() {
        let x0 = label_w + p as f64 * (panel_w + 20.0);
        let values: Vec<[f64; 2]> = systems.iter().map(|s| value(s)).collect();
        let max = values
            .iter()
            .flatten()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            .max(1e-9);
        let _ = writeln!(
            out,
            r#"<text x="{x0:.1}" y="38" font-weight="bold">{title}</text>"#
        );
        for (j, (name, color)) in series.iter().enumerate() {
            let lx = x0 + j as f64 * 110.0;
            let _ = writeln!(
                out,
                r#"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
                height - 24.0,
                lx + 14.0,
                height - 15.0
            );
        }
        let _ = writeln!(
            out,
            r##"<line x1="{x0:.1}" y1="{top:.1}" x2="{x0:.1}" y2="{:.1}" stroke="#444"/>"##,
            top + row_h * systems.len() as f64
        );
        for (i, pair) in values.iter().enumerate() {
            for (j, v) in pair.iter().enumerate() {
                let y = top + row_h * i as f64 + 5.0 + j as f64 * 12.0;
                let w = if v.is_finite() {
                    (v / max) * (panel_w - 60.0)
                } else {
                    0.0
                };
                let text = if v.is_finite() {
                    if *v >= 100.0 || v.fract() == 0.0 {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.1}")
                    }
                } else {
                    "–".into()
                };
                let _ = writeln!(
                    out,
                    r#"<rect x="{x0:.1}" y="{y:.1}" width="{w:.1}" height="11" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="10">{text}</text>"#,
                    series[j].1,
                    x0 + w + 3.0,
                    y + 9.0
                );
            }
        }
    }
    let _ = writeln!(out, "</svg>");
    out
}
