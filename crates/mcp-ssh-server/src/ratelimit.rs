//! Token-bucket rate limits, three deep: one bucket per client (the MCP session in the 2025
//! era, the client identity in the stateless era), one per remote address, and one for the
//! whole server. A request takes a token from each.
//!
//! The address bucket is what a client cannot reset: it can mint a new MCP session or send a
//! new bearer token whenever it likes, and each gets a fresh client bucket, but every one of
//! them still draws on its address's bucket. (A load generator's workers share one address;
//! the `loadtest` profile sizes that bucket like the server's.)
//!
//! An "address" is a client's network as [`network_of`] draws it: an IPv4 address, or the /64
//! of an IPv6 one. A single IPv6 host usually holds a whole /64 (SLAAC, privacy addresses,
//! RFC 6177) and can pick a fresh address per connection, so per-address limits keyed by the
//! full address would be reset as easily as per-session ones. The per-address MCP session cap
//! uses the same key.
//!
//! A bucket of capacity N refills at N per minute, so a client may burst N requests and then
//! sustain N/min. Every JSON-RPC request costs one token (the original charged tools/call
//! twice). Backed by `governor`, whose GCRA is a token bucket without a timer task.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

/// The network a per-address limit applies to: an IPv4 address itself (also when it arrives
/// IPv4-mapped, `::ffff:a.b.c.d`, on a dual-stack socket), the /64 of an IPv6 address.
pub fn network_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                v6.to_bits() & !((1u128 << 64) - 1),
            )),
        },
    }
}

/// The server's rate limits.
#[derive(Debug)]
pub struct RateLimits {
    per_client: Option<DefaultKeyedRateLimiter<String>>,
    per_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
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
    /// The bucket of the client's remote address.
    Address,
    /// The server-wide bucket.
    Global,
}

fn quota(per_min: u32) -> Option<Quota> {
    NonZeroU32::new(per_min).map(Quota::per_minute)
}

impl RateLimits {
    /// Buckets of `per_client`, `per_address` and `global` requests per minute; `None`
    /// disables one.
    pub fn new(per_client: Option<u32>, per_address: Option<u32>, global: Option<u32>) -> Self {
        Self {
            per_client: per_client.and_then(quota).map(governor::RateLimiter::keyed),
            per_address: per_address
                .and_then(quota)
                .map(governor::RateLimiter::keyed),
            global: global.and_then(quota).map(governor::RateLimiter::direct),
            clock: DefaultClock::default(),
        }
    }

    /// Take one token for `client` at `address`, or say how long to wait.
    pub fn check(&self, client: &str, address: IpAddr) -> Result<(), Limited> {
        // Narrowest first, so a noisy client drains neither its neighbours' address bucket
        // nor the server's.
        if let Some(limiter) = &self.per_client
            && let Err(not_until) = limiter.check_key(&client.to_owned())
        {
            return Err(Limited {
                scope: LimitScope::Client,
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        if let Some(limiter) = &self.per_address
            && let Err(not_until) = limiter.check_key(&address)
        {
            return Err(Limited {
                scope: LimitScope::Address,
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
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
        if let Some(limiter) = &self.per_address {
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

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const THERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn a_client_gets_its_burst_then_is_refused() {
        let rl = RateLimits::new(Some(5), None, None);
        for _ in 0..5 {
            assert!(rl.check("a", HERE).is_ok());
        }
        let err = rl
            .check("a", HERE)
            .expect_err("sixth request is over the limit");
        assert_eq!(err.scope, LimitScope::Client);
        // 5/min refills one token every 12 s.
        assert!(
            err.retry_after_secs() >= 11 && err.retry_after_secs() <= 12,
            "{err:?}"
        );
        assert!(
            rl.check("b", HERE).is_ok(),
            "another client has its own bucket"
        );
    }

    #[test]
    fn the_global_bucket_covers_all_clients() {
        let rl = RateLimits::new(None, None, Some(3));
        assert!(rl.check("a", HERE).is_ok());
        assert!(rl.check("b", HERE).is_ok());
        assert!(rl.check("c", HERE).is_ok());
        assert_eq!(
            rl.check("d", HERE).expect_err("limited").scope,
            LimitScope::Global
        );
    }

    #[test]
    fn unlimited_never_refuses() {
        let rl = RateLimits::new(None, None, None);
        for _ in 0..10_000 {
            assert!(rl.check("a", HERE).is_ok());
        }
    }

    /// An IPv6 host is its /64: rotating through its addresses does not reset its bucket.
    #[test]
    fn an_ipv6_host_is_its_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(network_of(a), network_of(b));
        assert_eq!(
            network_of(a),
            "2001:db8:1:2::".parse::<IpAddr>().expect("ip")
        );
        assert_ne!(network_of(a), network_of(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(network_of(mapped), THERE);
        assert_eq!(network_of(THERE), THERE);
        // Rotating through the /64 does not reset the address bucket.
        let limits = RateLimits::new(None, Some(3), None);
        for (i, ip) in [a, b, a].into_iter().enumerate() {
            assert!(limits.check(&format!("c{i}"), network_of(ip)).is_ok());
        }
        assert!(limits.check("c3", network_of(b)).is_err());
        assert!(limits.check("c4", network_of(other)).is_ok());
    }

    /// A client that mints a new identity (MCP session, bearer) for every request gets a fresh
    /// client bucket each time, and still runs out: its address's bucket is shared.
    #[test]
    fn rotating_identities_does_not_reset_the_address_bucket() {
        let rl = RateLimits::new(Some(5), Some(8), None);
        for i in 0..8 {
            assert!(rl.check(&format!("mcp:{i}"), HERE).is_ok(), "request {i}");
        }
        let err = rl
            .check("mcp:fresh", HERE)
            .expect_err("address bucket empty");
        assert_eq!(err.scope, LimitScope::Address);
        assert!(
            rl.check("mcp:fresh", THERE).is_ok(),
            "another address has its own"
        );
    }
}
