//! Shared by the pool and sinks benchmarks (included with `#[path]`):
//! the middle and spread of figures taken once per round.

/// The median (the upper one of an even count).
pub fn median(v: Vec<f64>) -> f64 {
    quartiles(&v).1
}

/// Lower quartile, median and upper quartile (nearest rank; halves round
/// up, so the median of an even count is the upper middle value).
pub fn quartiles(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
    (q(0.25), q(0.5), q(0.75))
}

/// `median [lower quartile, upper quartile]` of per-round ratios.
#[allow(dead_code)]
pub fn spread(v: &[f64]) -> String {
    let (lo, mid, hi) = quartiles(v);
    format!("{mid:.3} [{lo:.3}, {hi:.3}]")
}
