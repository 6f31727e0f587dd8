//! The open model's schedule: when each arrival is due, as an offset from the phase start.
//!
//! Arrivals are handed out one at a time to whichever worker is free, like wrk2's per-request
//! schedule: a worker that picks an arrival late still measures from the due time, so a stall
//! of the server shows in the latency instead of silently lowering the request rate
//! (coordinated omission). The rate is constant, or piecewise linear through k6-style stages,
//! solved exactly per segment (no accumulation of rounding over long runs).

use crate::scenario::Stage;

/// The arrival rate over a phase.
#[derive(Debug, Clone, PartialEq)]
pub enum RateShape {
    /// Arrivals per second.
    Constant(f64),
    /// Start at `start` arrivals/s, then ramp linearly to each stage's target.
    Ramp {
        /// Rate at t = 0.
        start: f64,
        /// Stages.
        stages: Vec<Stage>,
    },
}

/// One segment of constant slope: from `t0` (s) for `len` s, rate `r0 + k·(t - t0)`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    t0: f64,
    len: f64,
    r0: f64,
    k: f64,
    /// Arrivals before this segment.
    a0: f64,
}

/// Hands out due times.
#[derive(Debug, Clone)]
pub struct Schedule {
    segments: Vec<Segment>,
    end: f64,
    /// Index (in the whole schedule) of the next arrival handed out.
    n: u64,
    /// Arrivals between two handed out: 1, or N for one agent of N (`--segment`).
    stride: u64,
}

impl Schedule {
    /// A schedule of `shape` lasting `duration_s` seconds (stages beyond it are cut; a ramp
    /// shorter than it holds its last target).
    pub fn new(shape: &RateShape, duration_s: f64) -> Self {
        let mut segments = Vec::new();
        let mut t = 0.0;
        let mut a = 0.0;
        let mut push = |len: f64, r0: f64, r1: f64, t: &mut f64, a: &mut f64| {
            if len <= 0.0 {
                return;
            }
            let k = (r1 - r0) / len;
            segments.push(Segment {
                t0: *t,
                len,
                r0,
                k,
                a0: *a,
            });
            *a += r0 * len + k * len * len / 2.0;
            *t += len;
        };
        match shape {
            RateShape::Constant(r) => push(duration_s, *r, *r, &mut t, &mut a),
            RateShape::Ramp { start, stages } => {
                let mut r = *start;
                for st in stages {
                    push(st.duration_s, r, st.target, &mut t, &mut a);
                    r = st.target;
                }
                if t < duration_s {
                    push(duration_s - t, r, r, &mut t, &mut a);
                }
            }
        }
        Self {
            segments,
            end: duration_s,
            n: 0,
            stride: 1,
        }
    }

    /// Only the arrivals `first`, `first + stride`, `first + 2·stride`, … of this schedule:
    /// one agent's share when `stride` agents share it (k6's execution-segment striping: the
    /// agents' arrivals together are exactly this schedule's).
    pub fn striped(mut self, first: u64, stride: u64) -> Self {
        self.n = first;
        self.stride = stride.max(1);
        self
    }

    /// The due time (seconds from the phase start) of the next arrival, or `None` when the
    /// phase has no more.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<f64> {
        let target = self.n as f64;
        let seg = self
            .segments
            .iter()
            .find(|s| target < s.a0 + s.r0 * s.len + s.k * s.len * s.len / 2.0)?;
        let a = target - seg.a0;
        let dt = if seg.k.abs() < 1e-12 {
            if seg.r0 <= 0.0 {
                return None;
            }
            a / seg.r0
        } else {
            // k/2·dt² + r0·dt − a = 0
            let disc = seg.r0 * seg.r0 + 2.0 * seg.k * a;
            (-seg.r0 + disc.max(0.0).sqrt()) / seg.k
        };
        let t = seg.t0 + dt.clamp(0.0, seg.len);
        if t >= self.end {
            return None;
        }
        self.n += self.stride;
        Some(t)
    }

    /// Ends the schedule early: how many arrivals it still had (this agent's share). They are
    /// never sent; a run reports them as dropped.
    pub fn drop_rest(&mut self) -> u64 {
        let mut n = 0;
        while self.next().is_some() {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_rest_counts_what_was_still_due() {
        let mut s = Schedule::new(&RateShape::Constant(10.0), 2.0);
        for _ in 0..5 {
            assert!(s.next().is_some());
        }
        assert_eq!(s.drop_rest(), 15);
        assert_eq!(s.next(), None);
        assert_eq!(s.drop_rest(), 0, "a second worker finds nothing left");
        let mut third = Schedule::new(&RateShape::Constant(10.0), 2.0).striped(1, 3);
        assert_eq!(third.drop_rest(), 7, "arrivals 1, 4, …, 19 of 20");
    }

    #[test]
    fn constant_rate_is_evenly_spaced_and_exact_in_count() {
        let mut s = Schedule::new(&RateShape::Constant(5000.0), 10.0);
        let mut last = -1.0;
        let mut n = 0;
        while let Some(t) = s.next() {
            assert!(t > last);
            last = t;
            n += 1;
        }
        assert_eq!(n, 50_000);
        assert!((last - (49_999.0 / 5000.0)).abs() < 1e-9);
    }

    #[test]
    fn a_linear_ramp_has_the_integral_number_of_arrivals() {
        // 0 → 100/s over 10 s: 500 arrivals, then 100/s for 5 s: 500 more.
        let shape = RateShape::Ramp {
            start: 0.0,
            stages: vec![Stage {
                duration_s: 10.0,
                target: 100.0,
            }],
        };
        let mut s = Schedule::new(&shape, 15.0);
        let times: Vec<f64> = std::iter::from_fn(|| s.next()).collect();
        assert!((times.len() as i64 - 1000).abs() <= 1, "{}", times.len());
        let first_half = times.iter().filter(|t| **t < 5.0).count();
        // ∫0..5 10t dt = 125.
        assert!((first_half as i64 - 125).abs() <= 1, "{first_half}");
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn zero_rate_yields_nothing() {
        let mut s = Schedule::new(&RateShape::Constant(0.0), 10.0);
        assert_eq!(s.next(), None);
    }

    /// Three stripes of a ramp are, together, exactly the ramp's arrivals.
    #[test]
    fn stripes_add_up_to_the_whole_schedule() {
        let shape = RateShape::Ramp {
            start: 10.0,
            stages: vec![Stage {
                duration_s: 7.0,
                target: 333.0,
            }],
        };
        let whole: Vec<f64> = {
            let mut s = Schedule::new(&shape, 9.5);
            std::iter::from_fn(|| s.next()).collect()
        };
        let mut parts: Vec<f64> = (0..3)
            .flat_map(|i| {
                let mut s = Schedule::new(&shape, 9.5).striped(i, 3);
                std::iter::from_fn(move || s.next()).collect::<Vec<_>>()
            })
            .collect();
        parts.sort_by(f64::total_cmp);
        assert_eq!(parts, whole);
    }
}
