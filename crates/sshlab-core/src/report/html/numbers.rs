//! How numbers read on the page: milliseconds at a precision that suits their size, axis tick
//! labels without trailing zeros, elapsed time on time axes, and wall-clock dates. Each of them
//! first turns a non-finite value into 0 ([`fin`]), because a summary of an empty or cut-short
//! run can carry NaN and the page must still come out whole.

/// A finite number or 0.
pub(super) fn fin(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}

/// `f(v)` for a finite `v`, else "n/a" (the value was missing or could not be computed).
pub(super) fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.filter(|v| v.is_finite()).map_or("n/a".to_owned(), f)
}

/// Milliseconds, with precision that suits the magnitude.
pub(super) fn ms(v: f64) -> String {
    let v = fin(v);
    if v >= 10_000.0 {
        format!("{:.2} s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// A tick label: no trailing zeros.
pub(super) fn tick(v: f64) -> String {
    let v = fin(v);
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Seconds as `42s`, or `3:05` on long axes.
pub(super) fn secs_label(t: f64, long: bool) -> String {
    let t = fin(t).max(0.0).round() as u64;
    if long {
        format!("{}:{:02}", t / 60, t % 60)
    } else {
        format!("{t}s")
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub(super) fn utc(ts: f64) -> String {
    if !ts.is_finite() || ts <= 0.0 {
        return "n/a".into();
    }
    let (y, m, d, hh, mm, ss) = crate::report::format::utc_fields(ts as i64);
    format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_ticks() {
        assert_eq!(utc(1_740_838_953.0), "2025-03-01 14:22:33 UTC");
        assert_eq!(utc(0.0), "n/a");
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(secs_label(185.0, true), "3:05");
        assert_eq!(secs_label(42.0, false), "42s");
    }
}
