//! netem's delay distribution tables, computed as iproute2 computes the files `tc` loads
//! (`normal.dist`, `pareto.dist`, made by iproute2's `netem/normal.c` and `netem/pareto.c`):
//! 4,096 values that sample the distribution's inverse CDF, scaled by `NETEM_DIST_SCALE`
//! (8,192 = one `jitter`). The kernel draws a random index and adds `value × jitter / 8192` to
//! the delay. Computed here, not read from iproute2's files, so that sshlab needs no tc (and a
//! NixOS guest no path into iproute2's store path); the unit test checks them against those
//! files' fingerprints and, where iproute2 is installed, against the files themselves.

use sshlab_core::netem::Distribution;

/// Values per table (`TABLESIZE / 4` in iproute2's generators).
pub const LEN: usize = 4096;
/// One jitter in table units (`NETEM_DIST_SCALE`, linux/pkt_sched.h).
const SCALE: f64 = 8192.0;

/// The table of `d`.
pub fn table(d: Distribution) -> Vec<i16> {
    match d {
        Distribution::Normal => normal(),
        Distribution::Pareto => pareto(),
    }
}

/// iproute2's normal.c: the standard normal's inverse CDF, by walking x from -10 to 10 in
/// steps of 0.00005 and noting at which of 16,384 quantiles each lands; every 4th quantile.
fn normal() -> Vec<i16> {
    const QUANTILES: usize = 4 * LEN;
    let mut at = vec![0.0f64; QUANTILES + 1];
    let mut x = -10.0f64;
    while x < 10.05 {
        let cdf = 0.5 + 0.5 * libm::erf(x / std::f64::consts::SQRT_2);
        // In 0..=QUANTILES: cdf is within [0, 1].
        let i = (QUANTILES as f64 * cdf).round_ties_even() as usize;
        if let Some(slot) = at.get_mut(i) {
            *slot = x;
        }
        x += 0.00005;
    }
    (0..QUANTILES)
        .step_by(4)
        .map(|i| to_i16(at[i] * SCALE))
        .collect()
}

/// iproute2's pareto.c: a = 3, shifted by its mean (1.5) and scaled to unit spread.
fn pareto() -> Vec<i16> {
    const A: f64 = 3.0;
    (0..LEN)
        .map(|k| {
            let u = (65536 - 16 * k) as f64 / 65536.0;
            let v = (1.0 / u.powf(1.0 / A) - 1.5) * (4.0 / 3.0) * SCALE;
            to_i16(v)
        })
        .collect()
}

/// Rounded like C's `rint` and kept within i16, as the generators do.
fn to_i16(v: f64) -> i16 {
    // Clamped first, so the cast is exact.
    v.round_ties_even()
        .clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
}

/// The table as `TCA_NETEM_DELAY_DIST` carries it: the values in host byte order.
pub fn bytes(d: Distribution) -> Vec<u8> {
    table(d).iter().flat_map(|v| v.to_ne_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a over the values' little-endian bytes.
    fn fingerprint(t: &[i16]) -> u64 {
        t.iter()
            .flat_map(|v| v.to_le_bytes())
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
    }

    /// The tables equal iproute2's files value for value: their fingerprints, taken from
    /// iproute2 6.1's files, and the files themselves where iproute2 is installed.
    #[test]
    fn tables_are_iproute2s() {
        for (d, sum, print, file) in [
            (
                Distribution::Normal,
                -26_163i64,
                0x3f19_8b60_14c3_b3b8u64,
                "normal",
            ),
            (
                Distribution::Pareto,
                -1_123_786,
                0x209e_1d3c_8618_19fa,
                "pareto",
            ),
        ] {
            let t = table(d);
            assert_eq!(t.len(), LEN);
            assert_eq!(t.iter().map(|v| i64::from(*v)).sum::<i64>(), sum, "{file}");
            assert_eq!(fingerprint(&t), print, "{file}");
            for dir in [
                "/usr/lib/x86_64-linux-gnu/tc",
                "/usr/lib/tc",
                "/usr/share/tc",
            ] {
                let Ok(text) = std::fs::read_to_string(format!("{dir}/{file}.dist")) else {
                    continue;
                };
                let theirs: Vec<i16> = text
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .flat_map(str::split_whitespace)
                    .map(|v| v.parse().expect("a value"))
                    .collect();
                assert_eq!(t, theirs, "{dir}/{file}.dist");
            }
        }
        assert_eq!(
            table(Distribution::Normal)[LEN / 2],
            0,
            "the median is the delay"
        );
    }
}
