//! Latency histograms and the figures read from them.
//!
//! Why HdrHistogram and not a vector of samples: memory stays constant however long a run
//! lasts (a vector grows with every request, the trade-off oha's own comments point at), and
//! histograms merge by adding, so per-worker, per-phase and per-file histograms combine
//! exactly. Values are microseconds with 3 significant digits, from 1 µs to 1 hour.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable latency: one hour, in µs.
pub const MAX_US: u64 = 3_600_000_000;

/// A new latency histogram (µs, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    // The bounds are constants that HdrHistogram accepts; failure would be a programming error.
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

/// Record `ms` milliseconds (clamped to the trackable range).
pub fn record_ms(h: &mut Histogram<u64>, ms: f64) {
    let us = if ms.is_finite() && ms > 0.0 {
        (ms * 1000.0).round() as u64
    } else {
        1
    };
    h.saturating_record(us.clamp(1, MAX_US));
}

/// A latency histogram in JSON: HdrHistogram's compressed V2 encoding (the one its interval
/// logs use), in base64, so any HdrHistogram implementation reads it. For
/// `#[serde(with = "sshlab_core::results::stats::wire")]`. What it reads is added into a
/// [`histogram()`], so a histogram from a file always merges with ours; one that cannot be
/// (other bounds, values past an hour) is refused with a clear error.
pub mod wire {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use hdrhistogram::Histogram;
    use hdrhistogram::serialization::{
        Deserializer as HdrReader, Serializer as _, V2DeflateSerializer,
    };
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::Error as _};

    /// Encode.
    pub fn serialize<S: Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::new();
        V2DeflateSerializer::new()
            .serialize(h, &mut bytes)
            .map_err(|e| S::Error::custom(format!("histogram: {e:?}")))?;
        s.serialize_str(&STANDARD.encode(bytes))
    }

    /// Decode.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = STANDARD
            .decode(text.as_bytes())
            .map_err(|e| D::Error::custom(format!("histogram: not base64: {e}")))?;
        let read: Histogram<u64> = HdrReader::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| D::Error::custom(format!("histogram: {e:?}")))?;
        let mut h = super::histogram();
        h.add(&read)
            .map_err(|e| D::Error::custom(format!("histogram: out of range: {e:?}")))?;
        Ok(h)
    }
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl LatencyStats {
    /// Read the figures off `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }

    /// A percentile by name (`p50`, `p90`, `p95`, `p99`, `p999`, `min`, `max`, `mean`).
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "min" => self.min,
            "mean" | "avg" => self.mean,
            "p50" | "med" => self.p50,
            "p90" => self.p90,
            "p95" => self.p95,
            "p99" => self.p99,
            "p999" | "p99.9" => self.p999,
            "max" => self.max,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    /// A histogram survives the JSON of a capacity step file exactly; text that is not one
    /// is refused with a clear error.
    #[test]
    fn histograms_round_trip_through_json() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct W {
            #[serde(with = "super::wire")]
            h: hdrhistogram::Histogram<u64>,
        }
        let mut h = super::histogram();
        for ms in [0.5, 10.0, 12.5, 250.0, 30_000.0] {
            super::record_ms(&mut h, ms);
        }
        let json = serde_json::to_string(&W { h: h.clone() }).expect("json");
        let back: W = serde_json::from_str(&json).expect("read");
        assert_eq!(back.h, h);
        assert_eq!(back.h.value_at_quantile(0.5), h.value_at_quantile(0.5));
        for bad in [r#"{"h":"not base64!"}"#, r#"{"h":"SElTVA=="}"#] {
            let e = serde_json::from_str::<W>(bad).err().expect("refused");
            assert!(e.to_string().starts_with("histogram: "), "{e}");
        }
    }

    use super::*;

    #[test]
    fn percentiles_within_three_significant_digits() {
        let mut h = histogram();
        for i in 1..=1000 {
            record_ms(&mut h, f64::from(i));
        }
        let s = LatencyStats::of(&h);
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 500.0).abs() <= 0.5, "{s:?}");
        assert!((s.p99 - 990.0).abs() <= 1.0, "{s:?}");
        assert!((s.max - 1000.0).abs() <= 1.0, "{s:?}");
        assert_eq!(LatencyStats::of(&histogram()), LatencyStats::default());
    }

    #[test]
    fn merging_by_adding_equals_recording_everything_once() {
        let (mut a, mut b, mut all) = (histogram(), histogram(), histogram());
        for i in 0..500 {
            record_ms(&mut a, f64::from(i) * 0.7);
            record_ms(&mut b, f64::from(i) * 3.1);
            record_ms(&mut all, f64::from(i) * 0.7);
            record_ms(&mut all, f64::from(i) * 3.1);
        }
        a.add(&b).expect("same bounds");
        assert_eq!(LatencyStats::of(&a), LatencyStats::of(&all));
    }

    #[test]
    fn odd_values_are_clamped_not_panics() {
        let mut h = histogram();
        for v in [f64::NAN, -1.0, 0.0, f64::INFINITY, 1e12] {
            record_ms(&mut h, v);
        }
        assert_eq!(h.len(), 5);
    }
}
