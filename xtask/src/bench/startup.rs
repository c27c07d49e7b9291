//! The worker's start-up rows: `python/bench/bench_startup.py` prints one
//! JSON object (medians and ranges over interleaved rounds); each figure
//! becomes a row beside its same-run baseline.

use super::{json_number, ratio, Row};
use crate::{step, Result};

/// A figure's median, min and max (`{"median": .., "min": .., "max": ..}`).
fn spread(doc: &serde_json::Value, key: &str) -> Option<(f64, f64, f64)> {
    let v = doc.get(key)?;
    Some((
        json_number(v, "median")?,
        json_number(v, "min")?,
        json_number(v, "max")?,
    ))
}

/// `12.3 ms (10.1-15.0)`, or the same in MiB for kB figures.
fn shown(key: &str, (median, min, max): (f64, f64, f64)) -> String {
    if key.ends_with("_kb") {
        let mib = |kb: f64| kb / 1024.0;
        format!("{:.1} MiB ({:.1}-{:.1})", mib(median), mib(min), mib(max))
    } else {
        format!("{median:.1} ms ({min:.1}-{max:.1})")
    }
}

/// Runs the start-up bench and adds its rows.
pub(super) fn python_startup(quick: bool, rows: &mut Vec<Row>) -> Result {
    step("Python worker start-up");
    let rounds = if quick { "3" } else { "9" };
    let doc = super::python_bench_json("python/bench/bench_startup.py", &["--rounds", rounds])?;
    for (key, figure, base_key, base_name) in [
        (
            "worker_ready_ms",
            "worker spawn to ready line",
            "floor_ready_ms",
            "python -c",
        ),
        (
            "worker_ready_ms",
            "worker spawn to ready line",
            "mp_spawn_ready_ms",
            "multiprocessing spawn child",
        ),
        (
            "worker_ready_ms",
            "worker spawn to ready line",
            "aio_worker_ready_ms",
            "served by grpc.aio",
        ),
        (
            "worker_ready_cpu_ms",
            "worker CPU time to ready line",
            "floor_ready_cpu_ms",
            "python -c",
        ),
        (
            "worker_ready_cpu_ms",
            "worker CPU time to ready line",
            "mp_spawn_ready_cpu_ms",
            "multiprocessing spawn child",
        ),
        (
            "after_imports_ready_ms",
            "worker's imports before ready, in a process",
            "before_imports_ready_ms",
            "the old import set",
        ),
        (
            "after_imports_ready_cpu_ms",
            "CPU time of the worker's imports before ready",
            "before_imports_ready_cpu_ms",
            "the old import set",
        ),
        (
            "after_imports_rss_kb",
            "RSS of the worker's imports before ready",
            "before_imports_rss_kb",
            "the old import set",
        ),
        (
            "worker_rss_kb",
            "worker RSS, ready and one call served",
            "floor_rss_kb",
            "python -c",
        ),
        (
            "worker_rss_kb",
            "worker RSS, ready and one call served",
            "mp_spawn_rss_kb",
            "multiprocessing spawn child",
        ),
        (
            "worker_rss_kb",
            "worker RSS, ready and one call served",
            "aio_worker_rss_kb",
            "served by grpc.aio",
        ),
    ] {
        let (Some(v), Some(base)) = (spread(&doc, key), spread(&doc, base_key)) else {
            continue;
        };
        rows.push(Row {
            area: "startup",
            figure: figure.into(),
            value: shown(key, v),
            baseline: format!("{base_name} {}", shown(base_key, base)),
            ratio: ratio(v.0, base.0),
        });
    }
    if let (Some(after), Some(before)) = (
        json_number(&doc, "after_imports_modules"),
        json_number(&doc, "before_imports_modules"),
    ) {
        rows.push(Row {
            area: "startup",
            figure: "modules imported before ready".into(),
            value: format!("{after}"),
            baseline: format!("the old import set {before}"),
            ratio: ratio(after, before),
        });
    }
    let ready = spread(&doc, "worker_ready_ms").map_or(0.0, |v| v.0);
    // `[[step, wall ms, CPU ms or null], ...]`, in the order the steps ran.
    if let Some(phases) = doc.get("worker_phases_ms").and_then(|p| p.as_array()) {
        for phase in phases {
            let (Some(name), Some(ms)) = (
                phase.get(0).and_then(|n| n.as_str()),
                phase.get(1).and_then(|v| v.as_f64()),
            ) else {
                continue;
            };
            let cpu = phase.get(2).and_then(|v| v.as_f64());
            rows.push(Row {
                area: "startup",
                figure: match name.strip_prefix("host: ") {
                    Some(host) => format!("host step after ready: {host}"),
                    None => format!("worker step: {name}"),
                },
                value: match cpu {
                    Some(cpu) => format!("{ms:.1} ms, cpu {cpu:.1} ms"),
                    None => format!("{ms:.1} ms"),
                },
                baseline: format!("spawn to ready {ready:.1} ms"),
                ratio: ratio(ms, ready),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_are_read_and_shown_in_their_unit() {
        let doc: serde_json::Value = serde_json::from_str(
            r#"{"a_ms": {"median": 2.0, "min": 1.0, "max": 3.5},
                "b_rss_kb": {"median": 2048, "min": 1024, "max": 3072},
                "c_ms": {"median": 1.0}}"#,
        )
        .unwrap();
        let a = spread(&doc, "a_ms").unwrap();
        assert_eq!(shown("a_ms", a), "2.0 ms (1.0-3.5)");
        let b = spread(&doc, "b_rss_kb").unwrap();
        assert_eq!(shown("b_rss_kb", b), "2.0 MiB (1.0-3.0)");
        assert_eq!(spread(&doc, "c_ms"), None);
        assert_eq!(spread(&doc, "missing"), None);
    }
}
