//! 2025-era MCP sessions: minted by `initialize`, named by the `Mcp-Session-Id` header,
//! ended by DELETE or by idling past the session timeout. At most `max` are open, and one
//! remote address holds at most its share: `max_per_address` while the server is empty,
//! shrinking in proportion as it fills (`max_per_address × free / max`, at least one while any
//! is free). So each address that fills its share leaves most of what is free to the others:
//! 11 addresses flooding at once leave about half the server free, and filling it one address
//! after another takes about 80 of them at the default 409 of 4,096 (before, 11 addresses at
//! 409 sessions each filled the 4,096 and every other client got 503 for up to 30 minutes). When the server is nearly full (7/8 of `max`), each `initialize`
//! first evicts one session that did nothing after its own `initialize` (its
//! `notifications/initialized` aside) for [`UNUSED_EVICTABLE_AFTER`], taking it from the
//! address that holds the most sessions: sessions minted only to hold a slot give way to new
//! clients. A session that made any other request is never evicted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sessions::mint_id;

/// How long a session that did nothing after `initialize` is kept, at least, before it may be
/// evicted to make room near the cap.
pub const UNUSED_EVICTABLE_AFTER: Duration = Duration::from_secs(5);

/// One MCP session.
#[derive(Debug, Clone)]
pub struct McpSession {
    /// The negotiated protocol version.
    pub version: &'static str,
    address: IpAddr,
    last_seen: Instant,
    /// Whether it made a request after `initialize` (other than `notifications/initialized`).
    used: bool,
}

/// Why `initialize` got no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The server's cap (`--max-mcp-sessions`) is reached.
    Server(usize),
    /// The address holds its share: `holds` sessions, its share being `share` now.
    Address {
        /// Sessions the address holds.
        holds: usize,
        /// Its share now: `--max-mcp-sessions-per-address`, or the sessions still free when
        /// fewer.
        share: usize,
    },
}

/// Why a session id was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Never issued, ended, or expired.
    Unknown,
}

/// The store of open MCP sessions.
#[derive(Debug)]
pub struct McpSessions {
    inner: Mutex<Inner>,
    timeout: Duration,
    max: usize,
    max_per_address: usize,
    /// [`UNUSED_EVICTABLE_AFTER`] (shorter in unit tests).
    unused_grace: Duration,
}

/// The sessions, and how many each address holds (kept with every insert and removal, so the
/// per-address cap costs a lookup, not a walk over every session).
#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, McpSession>,
    per_address: HashMap<IpAddr, usize>,
    /// Sessions found expired outside the sweep (by `initialize`'s purge or a `touch`), kept
    /// for the next sweep to report, so what they own is released then (each session once:
    /// bounded by the cap).
    ended: Vec<String>,
}

impl Inner {
    fn insert(&mut self, id: String, session: McpSession) {
        *self.per_address.entry(session.address).or_default() += 1;
        if let Some(old) = self.map.insert(id, session) {
            self.forget(old.address);
        }
    }

    fn remove(&mut self, id: &str) -> Option<McpSession> {
        let s = self.map.remove(id)?;
        self.forget(s.address);
        Some(s)
    }

    fn forget(&mut self, address: IpAddr) {
        if let Some(n) = self.per_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&address);
            }
        }
    }

    fn from(&self, address: IpAddr) -> usize {
        self.per_address.get(&address).copied().unwrap_or(0)
    }

    /// Evict one session that did nothing after `initialize` and has been idle at least
    /// `grace`: of the address holding the most sessions, its longest idle. The next sweep
    /// reports it. False when there is none.
    fn evict_unused(&mut self, now: Instant, grace: Duration) -> bool {
        let victim = self
            .map
            .iter()
            .filter(|(_, s)| !s.used && now.duration_since(s.last_seen) >= grace)
            .max_by_key(|(_, s)| (self.from(s.address), now.duration_since(s.last_seen)))
            .map(|(id, s)| (id.clone(), s.address));
        let Some((id, address)) = victim else {
            return false;
        };
        self.remove(&id);
        tracing::info!(%address, "an MCP session unused since initialize was evicted to make room");
        self.ended.push(id);
        true
    }

    /// Remove the sessions idle past `timeout`; the next sweep reports them.
    fn expire(&mut self, now: Instant, timeout: Duration) {
        let dead: Vec<String> = self
            .map
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_seen) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            self.remove(&id);
            self.ended.push(id);
        }
    }
}

impl McpSessions {
    /// An empty store whose sessions expire after `timeout` idle, holding at most `max`, and
    /// at most `max_per_address` from one address.
    pub fn new(timeout: Duration, max: usize, max_per_address: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            timeout,
            max,
            max_per_address,
            unused_grace: UNUSED_EVICTABLE_AFTER,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// When the server counts as nearly full: 7/8 of the cap.
    fn nearly_full(&self) -> usize {
        self.max - self.max / 8
    }

    /// Open a session speaking `version` for a client at `address`; returns its id, or which
    /// cap is reached. Near the cap, expired sessions are dropped and one unused session is
    /// evicted first.
    pub fn create(&self, version: &'static str, address: IpAddr) -> Result<String, Full> {
        let mut inner = self.lock();
        let now = Instant::now();
        let share = |open: usize| {
            self.max_per_address
                .saturating_mul(self.max.saturating_sub(open))
                .div_ceil(self.max.max(1))
        };
        if inner.map.len() >= self.nearly_full() || inner.from(address) >= share(inner.map.len()) {
            inner.expire(now, self.timeout);
        }
        if inner.map.len() >= self.nearly_full() {
            inner.evict_unused(now, self.unused_grace);
        }
        let open = inner.map.len();
        if open >= self.max {
            return Err(Full::Server(open));
        }
        let holds = inner.from(address);
        if holds >= share(open) {
            return Err(Full::Address {
                holds,
                share: share(open),
            });
        }
        let id = mint_id("mcp_");
        inner.insert(
            id.clone(),
            McpSession {
                version,
                address,
                last_seen: now,
                used: false,
            },
        );
        Ok(id)
    }

    /// Look up and touch a session for a request; `used`: the request counts as using the
    /// session (anything but `notifications/initialized`). An expired one is removed and
    /// reported unknown.
    pub fn touch(&self, id: &str, used: bool) -> Result<McpSession, Lookup> {
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.map.get_mut(id) {
            Some(s) if now.duration_since(s.last_seen) <= self.timeout => {
                s.last_seen = now;
                s.used |= used;
                Ok(s.clone())
            }
            Some(_) => {
                inner.remove(id);
                inner.ended.push(id.to_owned());
                Err(Lookup::Unknown)
            }
            None => Err(Lookup::Unknown),
        }
    }

    /// End a session; false when it did not exist.
    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    /// Remove sessions idle past the timeout; returns their ids, and those of sessions found
    /// expired since the last sweep (to release what they own).
    pub fn expire(&self) -> Vec<String> {
        let mut inner = self.lock();
        inner.expire(Instant::now(), self.timeout);
        std::mem::take(&mut inner.ended)
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const THERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    #[test]
    fn sessions_live_until_removed_or_expired() {
        let s = McpSessions::new(Duration::from_millis(50), 100, 100);
        let a = s.create("2025-11-25", HERE).expect("room");
        assert_eq!(s.touch(&a, true).expect("open").version, "2025-11-25");
        assert_eq!(
            s.touch("mcp_nope", true).expect_err("unknown"),
            Lookup::Unknown
        );
        assert!(s.remove(&a));
        assert!(s.touch(&a, true).is_err());
        let b = s.create("2025-06-18", HERE).expect("room");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(s.expire(), vec![b.clone()]);
        assert!(s.touch(&b, true).is_err());
    }

    #[test]
    fn the_cap_holds_and_expired_sessions_make_room() {
        let s = McpSessions::new(Duration::from_millis(50), 2, 2);
        assert!(s.create("2025-11-25", HERE).is_ok() && s.create("2025-11-25", THERE).is_ok());
        assert_eq!(s.create("2025-11-25", HERE), Err(Full::Server(2)));
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            s.create("2025-11-25", HERE).is_ok(),
            "expired ones make room"
        );
        assert_eq!(s.len(), 1);
    }

    /// One address cannot fill the server: past its own cap it is refused while another
    /// address still gets in; its expired sessions give its room back.
    #[test]
    fn one_address_cannot_take_every_slot() {
        let s = McpSessions::new(Duration::from_millis(50), 10, 3);
        for _ in 0..3 {
            s.create("2025-11-25", HERE)
                .expect("within the address cap");
        }
        assert_eq!(
            s.create("2025-11-25", HERE),
            Err(Full::Address { holds: 3, share: 3 })
        );
        assert!(s.create("2025-11-25", THERE).is_ok());
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.create("2025-11-25", HERE).is_ok());
    }

    /// An address's share shrinks as the server fills: eleven addresses filling theirs one
    /// after the other leave room for a twelfth (before, ten of them filled the server).
    #[test]
    fn the_share_shrinks_as_the_server_fills() {
        let s = McpSessions::new(Duration::from_secs(3600), 100, 10);
        let fill = |ip: IpAddr| {
            std::iter::repeat_with(|| s.create("2025-11-25", ip))
                .take_while(Result::is_ok)
                .count()
        };
        assert_eq!(fill(HERE), 10, "the whole share while the server is empty");
        let took: Vec<usize> = (1..=11u8)
            .map(|n| fill(IpAddr::from([203, 0, 113, n])))
            .collect();
        assert!(took.windows(2).all(|w| w[1] <= w[0]), "{took:?}");
        assert!(s.len() <= 75, "{} open: {took:?}", s.len());
        assert!(
            s.create("2025-11-25", THERE).is_ok(),
            "a new address finds room"
        );
        // While the server is alone with one address, that address may take the whole cap
        // only when its share is the whole cap (the loadtest profile): then half.
        let alone = McpSessions::new(Duration::from_secs(3600), 100, 100);
        let n = std::iter::repeat_with(|| alone.create("2025-11-25", HERE))
            .take_while(Result::is_ok)
            .count();
        assert_eq!(n, 50);
    }

    /// Near the cap, sessions that did nothing after initialize give way, the address holding
    /// the most first; a session that made a request stays.
    #[test]
    fn unused_sessions_are_evicted_near_the_cap_and_used_ones_stay() {
        let mut s = McpSessions::new(Duration::from_secs(3600), 8, 8);
        s.unused_grace = Duration::from_millis(30);
        let used = s.create("2025-11-25", THERE).expect("room");
        s.touch(&used, true).expect("open");
        let ids: Vec<String> = (1..=7u8)
            .map(|n| {
                let ip = if n <= 3 {
                    HERE
                } else {
                    IpAddr::from([203, 0, 113, n])
                };
                s.create("2025-11-25", ip).expect("room")
            })
            .collect();
        // notifications/initialized alone is not a use.
        s.touch(&ids[0], false).expect("open");
        assert_eq!(s.len(), 8);
        assert_eq!(
            s.create("2025-11-25", IpAddr::from([198, 51, 100, 1])),
            Err(Full::Server(8)),
            "none idle long enough to evict"
        );
        std::thread::sleep(Duration::from_millis(50));
        let newcomer = |n: u8| s.create("2025-11-25", IpAddr::from([198, 51, 100, n]));
        newcomer(2).expect("an unused session made room");
        assert_eq!(
            s.lock().from(HERE),
            2,
            "the address holding the most went first"
        );
        for n in 3..9 {
            newcomer(n).expect("an unused session made room");
        }
        assert_eq!(
            newcomer(9),
            Err(Full::Server(8)),
            "only the used session and fresh ones are left"
        );
        assert!(s.touch(&used, true).is_ok(), "a used session was evicted");
        assert_eq!(s.expire().len(), 7, "the sweep reports the evicted");
    }

    /// The per-address counts follow every way a session ends: DELETE, a touch that finds it
    /// expired, the sweep, and the purge `initialize` makes when a cap is reached.
    #[test]
    fn per_address_counts_follow_every_removal() {
        let s = McpSessions::new(Duration::from_millis(50), 100, 100);
        let count = |ip| s.lock().from(ip);
        let a = s.create("2025-11-25", HERE).expect("room");
        let b = s.create("2025-11-25", HERE).expect("room");
        let _c = s.create("2025-11-25", THERE).expect("room");
        assert_eq!((count(HERE), count(THERE)), (2, 1));
        assert!(s.remove(&a));
        assert!(!s.remove(&a), "removed once");
        assert_eq!(count(HERE), 1);
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.touch(&b, true).is_err());
        assert_eq!(count(HERE), 0);
        assert_eq!(
            s.expire().len(),
            2,
            "the sweep's own, and the one the touch found expired"
        );
        assert_eq!(count(THERE), 0);
        assert!(s.lock().per_address.is_empty(), "no address left behind");

        let capped = McpSessions::new(Duration::from_millis(50), 100, 2);
        capped.create("2025-11-25", HERE).expect("room");
        capped.create("2025-11-25", HERE).expect("room");
        std::thread::sleep(Duration::from_millis(80));
        capped
            .create("2025-11-25", HERE)
            .expect("the purge made room");
        assert_eq!(capped.lock().from(HERE), 1);
        assert_eq!(
            capped.expire().len(),
            2,
            "the next sweep reports the purged sessions, so what they own is released"
        );
    }
}
