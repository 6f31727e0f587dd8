//! 2025-era MCP sessions: minted by `initialize`, named by the `Mcp-Session-Id` header,
//! ended by DELETE or by idling past the session timeout. At most `max` are open, and at most
//! `max_per_address` from one remote address, so one client cannot take every slot.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sessions::mint_id;

/// One MCP session.
#[derive(Debug, Clone)]
pub struct McpSession {
    /// The negotiated protocol version.
    pub version: &'static str,
    address: IpAddr,
    last_seen: Instant,
}

/// Why `initialize` got no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The server's cap (`--max-mcp-sessions`) is reached.
    Server(usize),
    /// The address's cap (`--max-mcp-sessions-per-address`) is reached.
    Address(usize),
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
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open a session speaking `version` for a client at `address`; returns its id, or which
    /// cap is reached (expired sessions are dropped first).
    pub fn create(&self, version: &'static str, address: IpAddr) -> Result<String, Full> {
        let mut inner = self.lock();
        if inner.map.len() >= self.max || inner.from(address) >= self.max_per_address {
            inner.expire(Instant::now(), self.timeout);
            if inner.map.len() >= self.max {
                return Err(Full::Server(inner.map.len()));
            }
            let n = inner.from(address);
            if n >= self.max_per_address {
                return Err(Full::Address(n));
            }
        }
        let id = mint_id("mcp_");
        inner.insert(
            id.clone(),
            McpSession {
                version,
                address,
                last_seen: Instant::now(),
            },
        );
        Ok(id)
    }

    /// Look up and touch a session. An expired one is removed and reported unknown.
    pub fn touch(&self, id: &str) -> Result<McpSession, Lookup> {
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.map.get_mut(id) {
            Some(s) if now.duration_since(s.last_seen) <= self.timeout => {
                s.last_seen = now;
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
        assert_eq!(s.touch(&a).expect("open").version, "2025-11-25");
        assert_eq!(s.touch("mcp_nope").expect_err("unknown"), Lookup::Unknown);
        assert!(s.remove(&a));
        assert!(s.touch(&a).is_err());
        let b = s.create("2025-06-18", HERE).expect("room");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(s.expire(), vec![b.clone()]);
        assert!(s.touch(&b).is_err());
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
        assert_eq!(s.create("2025-11-25", HERE), Err(Full::Address(3)));
        assert!(s.create("2025-11-25", THERE).is_ok());
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.create("2025-11-25", HERE).is_ok());
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
        assert!(s.touch(&b).is_err());
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
