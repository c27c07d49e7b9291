//! `cargo xtask bench [--quick]`: runs every benchmark and prints one table of
//! figure, baseline and ratio. Baselines are measured in the same run.
//!
//! Criterion benches are read from `target/criterion/<group>/<bench>/new/estimates.json`;
//! bench binaries and the Python benches print JSON that is parsed here.

use std::process::Command;

use crate::{cargo, root, run, step, venv_python, Result};

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

fn criterion_mean_ns(group: &str, bench: &str) -> Option<f64> {
    let path = root().join(format!(
        "target/criterion/{group}/{bench}/new/estimates.json"
    ));
    let text = std::fs::read_to_string(path).ok()?;
    // {"mean":{"confidence_interval":{...},"point_estimate":12.3,...},...}
    let mean = text.find("\"mean\"")?;
    let rest = &text[mean..];
    let pe = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let rest = &rest[pe..];
    let end = rest.find([',', '}'])?;
    rest[..end].trim().parse().ok()
}

fn json_number(text: &str, key: &str) -> Option<f64> {
    let needle = format!("\"{key}\":");
    let at = text.find(&needle)? + needle.len();
    let rest = text[at..].trim_start();
    let end = rest.find([',', '}', '\n']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
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
    let out = Command::new(venv_python())
        .args(["python/bench/bench_emit.py", "--json", "--n", n])
        .current_dir(root())
        .output()
        .map_err(|e| format!("cannot run the Python bench: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "python bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let base = json_number(&text, "baseline_call_ns").unwrap_or(0.0);
    for (key, figure) in [
        (
            "emit_enabled_ns",
            "python emit (target <= 1 µs; reference ~7.5 µs)",
        ),
        ("emit_disabled_ns", "python emit, telemetry disabled"),
        ("span_enabled_ns", "python span enter+exit"),
        ("span_disabled_ns", "python span, telemetry disabled"),
    ] {
        if let Some(v) = json_number(&text, key) {
            rows.push(Row {
                area: "python",
                figure: figure.into(),
                value: ns(v),
                baseline: format!("bare function call {}", ns(base)),
                ratio: ratio(v, base),
            });
        }
    }
    Ok(())
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
    crate::setup()?;
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let steps: [(&str, BenchStep); 2] = [("dispatch", dispatch), ("python", python_emit)];
    for (name, f) in steps {
        if let Err(e) = f(quick, &mut rows) {
            failures.push(format!("{name}: {e}"));
        }
    }
    print_table(&rows);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "some benchmarks failed:\n  {}",
            failures.join("\n  ")
        ))
    }
}
