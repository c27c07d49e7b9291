//! A latency histogram drawn with plain characters: one row per bucket, the
//! bucket's range in ms, a bar of `#` proportional to its count, the count.
//! Readable in a terminal without colours, in a CI log and in a file.

/// Upper bucket edges, in ms, in 1-2-5 steps; the last bucket is open.
const EDGES_MS: &[f64] = &[
    0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
    10000.0,
];

/// Width of the longest bar, in characters.
const BAR_WIDTH: usize = 40;

/// The lines of `tool`'s histogram over `latencies_ns` (call durations in
/// nanoseconds): a header naming the tool and the number of calls, then the
/// buckets from the first to the last one that holds a call.
pub fn render(tool: &str, latencies_ns: &[u64]) -> Vec<String> {
    let mut counts = vec![0u64; EDGES_MS.len() + 1];
    for ns in latencies_ns {
        let ms = *ns as f64 / 1e6;
        let i = EDGES_MS
            .iter()
            .position(|edge| ms < *edge)
            .unwrap_or(EDGES_MS.len());
        counts[i] += 1;
    }
    let mut lines = vec![format!("{tool} ({} calls)", latencies_ns.len())];
    let (Some(first), Some(last)) = (
        counts.iter().position(|c| *c > 0),
        counts.iter().rposition(|c| *c > 0),
    ) else {
        lines.push("  (no calls)".to_string());
        return lines;
    };
    let most = counts[first..=last]
        .iter()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    for (i, count) in counts.iter().enumerate().take(last + 1).skip(first) {
        // Round to the nearest character, but never hide a bucket that has calls.
        let mut len = ((*count as f64 / most as f64) * BAR_WIDTH as f64).round() as usize;
        if *count > 0 {
            len = len.max(1);
        }
        lines.push(format!(
            "  {:>15} |{:<BAR_WIDTH$} {count}",
            bucket_label(i),
            "#".repeat(len)
        ));
    }
    lines
}

/// The range of bucket `i`, e.g. `2-5 ms`, `< 0.1 ms`, `>= 10000 ms`.
fn bucket_label(i: usize) -> String {
    match i {
        0 => format!("< {} ms", EDGES_MS[0]),
        i if i == EDGES_MS.len() => format!(">= {} ms", EDGES_MS[i - 1]),
        i => format!("{}-{} ms", EDGES_MS[i - 1], EDGES_MS[i]),
    }
}
