//! `cargo xtask bench [--quick] [--plot] [--only NAME]`: runs every benchmark
//! (or the one named) and prints one table of figure, baseline and ratio.
//! Baselines are measured in the same run. `--plot` then draws the curves
//! bench's points as SVG charts (`plot.rs`).
//!
//! Criterion benches are read from
//! `<target dir>/criterion/<group>/<bench>/new/estimates.json`; the Python
//! bench prints one JSON object; both are read with serde_json. The other
//! bench binaries print table rows.

use std::process::Command;

use crate::{cargo, root, run, step, venv_python, Result};

mod startup;

/// A benchmark that appends its rows.
type BenchStep = fn(bool, &mut Vec<Row>) -> Result;

/// One line of the final table.
struct Row {
    area: &'static str,
    figure: String,
    value: String,
    baseline: String,
    ratio: String,
}

/// The mean estimate (ns) criterion wrote for `group/bench` in the target
/// directory (`criterion/<group>/<bench>/new/estimates.json`).
fn criterion_mean_ns(group: &str, bench: &str) -> Option<f64> {
    let path = crate::target_dir().join(format!("criterion/{group}/{bench}/new/estimates.json"));
    let text = std::fs::read_to_string(path).ok()?;
    mean_point_estimate(&text)
}

/// `mean.point_estimate` of a criterion `estimates.json`.
fn mean_point_estimate(estimates: &str) -> Option<f64> {
    let doc: serde_json::Value = serde_json::from_str(estimates).ok()?;
    doc.get("mean")?.get("point_estimate")?.as_f64()
}

/// A top-level number of a JSON object.
fn json_number(doc: &serde_json::Value, key: &str) -> Option<f64> {
    doc.get(key)?.as_f64()
}

fn ns(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} ms", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.2} µs", v / 1e3)
    } else {
        format!("{v:.1} ns")
    }
}

fn ratio(v: f64, base: f64) -> String {
    if base > 0.0 {
        format!("{:.2}x", v / base)
    } else {
        "-".into()
    }
}

fn dispatch(quick: bool, rows: &mut Vec<Row>) -> Result {
    step("telemetry dispatch (criterion)");
    let mut cmd = cargo();
    cmd.args([
        "bench",
        "-q",
        "-p",
        "snakepit-telemetry",
        "--bench",
        "dispatch",
        "--",
    ]);
    if quick {
        cmd.args(["--warm-up-time", "0.5", "--measurement-time", "1"]);
    }
    run(&mut cmd)?;
    let base = criterion_mean_ns("execute", "baseline_direct_closure_call").unwrap_or(0.0);
    for (bench, figure) in [
        ("0_handlers", "host execute, 0 handlers"),
        ("1_handler", "host execute, 1 handler (target <= 50 ns)"),
        ("4_handlers", "host execute, 4 handlers"),
        ("1_handler_filtered_out", "host execute, filtered out"),
        ("1_handler_sampled_0.5", "host execute, sampled at 0.5"),
    ] {
        if let Some(v) = criterion_mean_ns("execute", bench) {
            rows.push(Row {
                area: "dispatch",
                figure: figure.into(),
                value: ns(v),
                baseline: format!("direct closure call {}", ns(base)),
                ratio: ratio(v, base),
            });
        }
    }
    Ok(())
}

fn python_emit(quick: bool, rows: &mut Vec<Row>) -> Result {
    step("Python telemetry.emit");
    let n = if quick { "50000" } else { "200000" };
    let doc = python_bench_json("python/bench/bench_emit.py", &["--n", n])?;
    python_emit_rows(&doc, rows);
    Ok(())
}

/// Runs a Python bench script of the repository with `--json` and `args`
/// in the venv, and reads the one JSON object it prints. The error names
/// the script.
pub(crate) fn python_bench_json(script: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(venv_python())
        .arg(script)
        .arg("--json")
        .args(args)
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text)
        .map_err(|e| format!("{script} printed no JSON object ({e}): {text}"))
}

/// The rows of `bench_emit.py`'s JSON: each figure beside its target, its
/// ratio to a bare Python call with the same arguments and, for spans, to
/// an empty `with` of a trivial context manager (both measured in the same
/// run), so a miss shows by how much on any machine.
fn python_emit_rows(doc: &serde_json::Value, rows: &mut Vec<Row>) {
    let base = json_number(doc, "baseline_call_ns").unwrap_or(0.0);
    let with = json_number(doc, "baseline_with_ns").unwrap_or(0.0);
    for (key, figure, vs_with) in [
        ("emit_enabled_ns", "python emit (target <= 0.3 µs)", false),
        ("emit_disabled_ns", "python emit, telemetry disabled", false),
        (
            "span_enabled_ns",
            "python span enter+exit, root span (target <= 0.6 µs)",
            true,
        ),
        (
            "span_enabled_in_call_ns",
            "python span enter+exit, in a call (target <= 0.6 µs)",
            true,
        ),
        (
            "span_disabled_ns",
            "python span, telemetry disabled (target <= 0.15 µs)",
            true,
        ),
        (
            "span_disabled_with_metadata_ns",
            "python span with metadata, telemetry disabled",
            true,
        ),
        (
            "span_filtered_ns",
            "python span, its events filtered out (target <= 0.15 µs)",
            true,
        ),
    ] {
        let Some(v) = json_number(doc, key) else {
            continue;
        };
        let mut baseline = format!("bare call {}", ns(base));
        if vs_with && with > 0.0 {
            baseline += &format!(" (empty with {}: {})", ns(with), ratio(v, with));
        }
        rows.push(Row {
            area: "python",
            figure: figure.into(),
            value: ns(v),
            baseline,
            ratio: ratio(v, base),
        });
    }
}

/// Runs a criterion bench and reads the figures it wrote.
fn criterion(
    quick: bool,
    area: &'static str,
    package: &str,
    bench: &str,
    figures: &[(&str, &str, &str, &str)],
    rows: &mut Vec<Row>,
) -> Result {
    step(&format!("{package} --bench {bench} (criterion)"));
    let mut cmd = cargo();
    cmd.args(["bench", "-q", "-p", package, "--bench", bench, "--"]);
    if quick {
        cmd.args(["--warm-up-time", "0.5", "--measurement-time", "1"]);
    }
    run(cmd.env("SNAKEPIT_PYTHON", venv_python()))?;
    for (group, name, baseline, figure) in figures {
        let (Some(v), base) = (
            criterion_mean_ns(group, name),
            criterion_mean_ns(group, baseline).unwrap_or(0.0),
        ) else {
            continue;
        };
        rows.push(Row {
            area,
            figure: (*figure).into(),
            value: ns(v),
            baseline: format!("{} {}", baseline.replace('_', " "), ns(base)),
            ratio: ratio(v, base),
        });
    }
    Ok(())
}

/// Runs a bench binary (built with `features`, comma-separated, if any)
/// that prints `| figure | value | baseline | ratio |` rows, and keeps
/// those rows.
fn table_bench(
    quick: bool,
    (area, package, bench, features): (&'static str, &str, &str, &str),
    rows: &mut Vec<Row>,
) -> Result {
    step(&format!("{package} --bench {bench}"));
    let mut cmd = cargo();
    cmd.args(["bench", "-q", "-p", package, "--bench", bench]);
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
    cmd.args(["--", "--bench"])
        .env("SNAKEPIT_PYTHON", venv_python())
        .current_dir(root());
    if quick {
        cmd.envs([
            ("SNAKEPIT_BENCH_QUICK", "1"),
            ("BENCH_SECONDS", "1"),
            ("ROUNDS", "6"),
            ("BENCH_ROUNDS", "8"),
            ("BENCH_ROUND_SECONDS", "1"),
            ("CALLS", "30000"),
        ]);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {package} bench {bench}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    if !out.status.success() {
        return Err(format!(
            "{package} bench {bench} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    for line in text.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if !line.trim_start().starts_with('|') || cells.len() < 4 {
            continue;
        }
        let header = cells[0].starts_with("figure") || cells[0].starts_with('-');
        if header || cells[0].is_empty() {
            continue;
        }
        rows.push(Row {
            area,
            figure: cells[0].to_string(),
            value: cells[1].to_string(),
            baseline: cells[2].to_string(),
            ratio: cells[3].to_string(),
        });
    }
    Ok(())
}

fn plugins(quick: bool, rows: &mut Vec<Row>) -> Result {
    criterion(
        quick,
        "plugin",
        "snakepit-sinks",
        "plugin",
        &[
            (
                "plugin_handle",
                "plugin_sink",
                "noop_handler",
                "host cost per event into a plugin sink",
            ),
            (
                "plugin_e2e",
                "jsonl_plugin",
                "noop_plugin",
                "per event end to end, jsonl plugin",
            ),
        ],
        rows,
    )
}

fn prometheus(quick: bool, rows: &mut Vec<Row>) -> Result {
    criterion(
        quick,
        "sinks",
        "snakepit-sinks",
        "prometheus_execute",
        &[
            (
                "execute_python_call_stop",
                "prometheus_sink_summary",
                "baseline_trivial_handler",
                "host execute, Prometheus sink (target <= 300 ns)",
            ),
            (
                "call_events_6_per_call",
                "every_sink_on",
                "baseline_telemetry_off",
                "host events of one call, every sink on",
            ),
        ],
        rows,
    )
}

fn grpc(quick: bool, rows: &mut Vec<Row>) -> Result {
    table_bench(quick, ("grpc", "snakepit-grpc", "worker_calls", ""), rows)
}

fn pool(quick: bool, rows: &mut Vec<Row>) -> Result {
    table_bench(
        quick,
        ("pool", "snakepit-pool", "pool_throughput", ""),
        rows,
    )
}

fn sinks_calls(quick: bool, rows: &mut Vec<Row>) -> Result {
    table_bench(
        quick,
        ("sinks", "snakepit-pool", "call_throughput", ""),
        rows,
    )
}

/// Host CPU per call with the caller's OTel context taken, against none.
fn caller_context(quick: bool, rows: &mut Vec<Row>) -> Result {
    let bench = ("otel", "snakepit-pool", "caller_context", "opentelemetry");
    table_bench(quick, bench, rows)
}

/// TLS against plain TCP to workers in another network namespace (root).
fn tls(quick: bool, rows: &mut Vec<Row>) -> Result {
    table_bench(quick, ("tls", "snakepit-pool", "tls_throughput", ""), rows)
}

/// Calls/s by workers, a 1 ms CPU tool's overhead, latency by queue depth;
/// the bench also writes their points for `--plot` (a stale file is
/// removed first, so that a failed run draws nothing old).
fn curves(quick: bool, rows: &mut Vec<Row>) -> Result {
    let _ = std::fs::remove_file(crate::plot::bench_dir().join("curves.json"));
    table_bench(quick, ("curves", "snakepit-pool", "curves", ""), rows)
}

/// Round trips of 1 KB to 100 MB binary payloads (shared memory) against
/// multiprocessing.Pool pickling them.
fn large_payloads(quick: bool, rows: &mut Vec<Row>) -> Result {
    let bench = ("shm", "snakepit-pool", "large_payloads", "");
    table_bench(quick, bench, rows)
}

/// Worker start-up: template against spawn and multiprocessing.Pool
/// (pool ready, restart, memory per worker with a preload).
fn pool_startup(quick: bool, rows: &mut Vec<Row>) -> Result {
    table_bench(quick, ("startup", "snakepit-pool", "startup", ""), rows)
}

fn print_table(rows: &[Row]) {
    let w =
        |f: &dyn Fn(&Row) -> usize, title: usize| rows.iter().map(f).max().unwrap_or(0).max(title);
    let (wa, wf, wv, wb) = (
        w(&|r| r.area.len(), 4),
        w(&|r| r.figure.chars().count(), 6),
        w(&|r| r.value.chars().count(), 5),
        w(&|r| r.baseline.chars().count(), 8),
    );
    println!(
        "\n{:wa$}  {:wf$}  {:>wv$}  {:wb$}  ratio",
        "area", "figure", "value", "baseline"
    );
    println!("{}", "-".repeat(wa + wf + wv + wb + 14));
    for r in rows {
        println!(
            "{:wa$}  {:wf$}  {:>wv$}  {:wb$}  {}",
            r.area, r.figure, r.value, r.baseline, r.ratio
        );
    }
}

/// Runs every benchmark.
pub fn bench(args: &[String]) -> Result {
    let quick = args.iter().any(|a| a == "--quick");
    let plot = args.iter().any(|a| a == "--plot");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| {
            args.get(i + 1)
                .ok_or("--only needs a benchmark name, e.g. --only curves")
        })
        .transpose()?;
    crate::setup()?;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let steps: &[(&str, BenchStep)] = &[
        ("dispatch", dispatch),
        ("python", python_emit),
        ("startup", startup::python_startup),
        ("prometheus", prometheus),
        ("plugins", plugins),
        ("grpc", grpc),
        ("pool", pool),
        ("sinks", sinks_calls),
        ("caller context", caller_context),
        ("tls", tls),
        ("curves", curves),
        ("large payloads", large_payloads),
        ("pool startup", pool_startup),
    ];
    if let Some(only) = only.filter(|o| !steps.iter().any(|(name, _)| name == o)) {
        let names: Vec<&str> = steps.iter().map(|(name, _)| *name).collect();
        return Err(format!(
            "--only {only}: no such benchmark; one of {}",
            names.join(", ")
        ));
    }
    for &(name, f) in steps {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        if let Err(e) = f(quick, &mut rows) {
            failures.push(format!("{name}: {e}"));
        }
    }
    print_table(&rows);
    if plot && !failures.iter().any(|f| f.starts_with("curves:")) {
        step("charts of the curves");
        if let Err(e) = crate::plot::plot() {
            failures.push(format!("plot: {e}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "some benchmarks failed:\n  {}",
            failures.join("\n  ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mean_of_a_criterion_estimate_is_read() {
        let text = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":11.0,"upper_bound":13.5},"point_estimate":12.25,"standard_error":0.1},"median":{"point_estimate":99.0}}"#;
        assert_eq!(mean_point_estimate(text), Some(12.25));
        assert_eq!(
            mean_point_estimate(r#"{"median":{"point_estimate":1}}"#),
            None
        );
        assert_eq!(mean_point_estimate("not json"), None);
    }

    #[test]
    fn python_rows_carry_the_target_and_both_baselines() {
        let doc: serde_json::Value = serde_json::from_str(
            r#"{"baseline_call_ns": 50.0, "baseline_with_ns": 100.0,
                "span_filtered_ns": 200.0, "emit_enabled_ns": 400.0}"#,
        )
        .unwrap();
        let mut rows = Vec::new();
        python_emit_rows(&doc, &mut rows);
        let got: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.figure.as_str(),
                    r.value.as_str(),
                    r.baseline.as_str(),
                    r.ratio.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "python emit (target <= 0.3 µs)",
                    "400.0 ns",
                    "bare call 50.0 ns",
                    "8.00x"
                ),
                (
                    "python span, its events filtered out (target <= 0.15 µs)",
                    "200.0 ns",
                    "bare call 50.0 ns (empty with 100.0 ns: 2.00x)",
                    "4.00x"
                ),
            ]
        );
    }

    #[test]
    fn a_number_is_read_by_its_key_not_by_a_key_ending_in_it() {
        let doc: serde_json::Value =
            serde_json::from_str(r#"{"span_emit_enabled_ns": 9.0, "emit_enabled_ns": 1.5e3}"#)
                .unwrap();
        assert_eq!(json_number(&doc, "emit_enabled_ns"), Some(1500.0));
        assert_eq!(json_number(&doc, "missing"), None);
    }
}
