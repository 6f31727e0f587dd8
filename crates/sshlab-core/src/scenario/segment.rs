//! One agent's share of a test split across N agents (`--segment I/N`, 0-based), so that N
//! agents together run exactly the one test, with no rounding drift:
//!
//! - workers: agent I runs `⌊(I+1)·W/N⌋ − ⌊I·W/N⌋` of W (the shares add up to W);
//! - open-model arrivals: agent I makes the arrivals I, I+N, I+2N, … of the whole schedule
//!   (k6's execution-segment striping), so the N agents' arrivals are exactly the whole
//!   schedule's, whatever the rate, the ramp or the duration.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Segment `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Segment {
    /// 0-based.
    pub index: u32,
    /// How many agents share the test.
    pub count: u32,
}

/// Why a segment does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("segment `{0}`: expected I/N with 0 <= I < N (e.g. 0/3, 1/3, 2/3)")]
pub struct SegmentError(pub String);

impl Segment {
    /// The whole test (one agent).
    pub const WHOLE: Segment = Segment { index: 0, count: 1 };

    /// This segment's workers of `total`.
    pub fn workers(&self, total: usize) -> usize {
        let (i, n) = (self.index as usize, self.count as usize);
        (i + 1) * total / n - i * total / n
    }

    /// The index of this segment's first arrival in the whole schedule; the next ones follow
    /// every [`Segment::count`] arrivals.
    pub fn first_arrival(&self) -> u64 {
        u64::from(self.index)
    }
}

impl FromStr for Segment {
    type Err = SegmentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SegmentError(s.to_owned());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Serialize for Segment {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Segment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        assert_eq!("1/3".parse::<Segment>(), Ok(Segment { index: 1, count: 3 }));
        for bad in ["3/3", "0/0", "-1/3", "1", "a/b", "1/3/4"] {
            assert!(bad.parse::<Segment>().is_err(), "{bad}");
        }
        assert_eq!(Segment { index: 2, count: 5 }.to_string(), "2/5");
    }

    /// The shares of any total add up to it exactly, and differ by at most one.
    #[test]
    fn worker_shares_add_up_without_drift() {
        for total in 0..200 {
            for n in 1..12u32 {
                let shares: Vec<usize> = (0..n)
                    .map(|index| Segment { index, count: n }.workers(total))
                    .collect();
                assert_eq!(shares.iter().sum::<usize>(), total, "{total} over {n}");
                let (lo, hi) = (shares.iter().min(), shares.iter().max());
                assert!(hi.zip(lo).is_some_and(|(h, l)| h - l <= 1), "{shares:?}");
            }
        }
    }
}
