//! The middle and spread of figures taken once per benchmark round.

/// The median (the upper one of an even count). Panics on an empty list.
pub fn median(v: Vec<f64>) -> f64 {
    quartiles(&v).1
}

/// Lower quartile, median and upper quartile (nearest rank; halves round
/// up, so the median of an even count is the upper middle value). Panics on
/// an empty list.
pub fn quartiles(v: &[f64]) -> (f64, f64, f64) {
    assert!(!v.is_empty(), "quartiles of no figures");
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
    (q(0.25), q(0.5), q(0.75))
}

/// The `q` quantile (0.0..=1.0) of `v`, nearest rank as in [`quartiles`]:
/// `percentile(v, 0.99)` is the p99 of one block of latencies. Panics on an
/// empty list.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    assert!(!v.is_empty(), "percentile of no figures");
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize]
}

/// `median [lower quartile, upper quartile]` of per-round ratios, three
/// decimals.
pub fn spread(v: &[f64]) -> String {
    let (lo, mid, hi) = quartiles(v);
    format!("{mid:.3} [{lo:.3}, {hi:.3}]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_use_the_nearest_rank() {
        assert_eq!(quartiles(&[5.0, 1.0, 3.0, 2.0, 4.0]), (2.0, 3.0, 4.0));
        assert_eq!(median(vec![1.0, 2.0]), 2.0);
        assert_eq!(spread(&[1.0]), "1.000 [1.000, 1.000]");
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 0.99), 99.0);
        assert_eq!(percentile(&hundred, 0.5), 51.0);
    }
}
