//! Token-bucket rate limits: one bucket per client (the MCP session in the 2025 era, the
//! client identity in the stateless era) and one for the whole server.
//!
//! A bucket of capacity N refills at N per minute, so a client may burst N requests and then
//! sustain N/min. Every JSON-RPC request costs one token (the original charged tools/call
//! twice). Backed by `governor`, whose GCRA is a token bucket without a timer task.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

/// The server's rate limits.
#[derive(Debug)]
pub struct RateLimits {
    per_client: Option<DefaultKeyedRateLimiter<String>>,
    global: Option<DefaultDirectRateLimiter>,
    clock: DefaultClock,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// Which bucket was empty.
    pub scope: LimitScope,
    /// When the next token arrives (rounded up to whole seconds for `Retry-After`).
    pub retry_after: Duration,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitScope {
    /// The client's own bucket.
    Client,
    /// The server-wide bucket.
    Global,
}

fn quota(per_min: u32) -> Option<Quota> {
    NonZeroU32::new(per_min).map(Quota::per_minute)
}

impl RateLimits {
    /// Buckets of `per_client` and `global` requests per minute; `None` disables one.
    pub fn new(per_client: Option<u32>, global: Option<u32>) -> Self {
        Self {
            per_client: per_client.and_then(quota).map(governor::RateLimiter::keyed),
            global: global.and_then(quota).map(governor::RateLimiter::direct),
            clock: DefaultClock::default(),
        }
    }

    /// Take one token for `client`, or say how long to wait.
    pub fn check(&self, client: &str) -> Result<(), Limited> {
        if let Some(limiter) = &self.per_client {
            // Checking the client first means a noisy client can't drain the global bucket.
            if let Err(not_until) = limiter.check_key(&client.to_owned()) {
                return Err(Limited {
                    scope: LimitScope::Client,
                    retry_after: not_until.wait_time_from(self.clock.now()),
                });
            }
        }
        if let Some(limiter) = &self.global
            && let Err(not_until) = limiter.check()
        {
            return Err(Limited {
                scope: LimitScope::Global,
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        Ok(())
    }

    /// Forget clients whose buckets are full again, so memory follows the active clients.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.per_client {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

impl Limited {
    /// Whole seconds for the `Retry-After` header (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_its_burst_then_is_refused() {
        let rl = RateLimits::new(Some(5), None);
        for _ in 0..5 {
            assert!(rl.check("a").is_ok());
        }
        let err = rl.check("a").expect_err("sixth request is over the limit");
        assert_eq!(err.scope, LimitScope::Client);
        // 5/min refills one token every 12 s.
        assert!(
            err.retry_after_secs() >= 11 && err.retry_after_secs() <= 12,
            "{err:?}"
        );
        assert!(rl.check("b").is_ok(), "another client has its own bucket");
    }

    #[test]
    fn the_global_bucket_covers_all_clients() {
        let rl = RateLimits::new(None, Some(3));
        assert!(rl.check("a").is_ok());
        assert!(rl.check("b").is_ok());
        assert!(rl.check("c").is_ok());
        assert_eq!(
            rl.check("d").expect_err("limited").scope,
            LimitScope::Global
        );
    }

    #[test]
    fn unlimited_never_refuses() {
        let rl = RateLimits::new(None, None);
        for _ in 0..10_000 {
            assert!(rl.check("a").is_ok());
        }
    }
}
