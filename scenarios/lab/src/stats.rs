//! The figures the lab's reports are made of: median, min and max over repeated measures
//! (failovers, soak recoveries, bench reps).

/// Median, min and max of `values` (`None` when empty).
pub(crate) fn median_min_max(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return None;
    }
    let med = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    Some((med, v[0], v[n - 1]))
}
