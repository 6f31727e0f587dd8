//! 2025-era MCP sessions: minted by `initialize`, named by the `Mcp-Session-Id` header,
//! ended by DELETE or by idling past the session timeout.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sessions::mint_id;

/// One MCP session.
#[derive(Debug, Clone)]
pub struct McpSession {
    /// The negotiated protocol version.
    pub version: &'static str,
    last_seen: Instant,
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
    map: Mutex<HashMap<String, McpSession>>,
    timeout: Duration,
    max: usize,
}

impl McpSessions {
    /// An empty store whose sessions expire after `timeout` idle, holding at most `max`.
    pub fn new(timeout: Duration, max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            timeout,
            max,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, McpSession>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open a session speaking `version`; returns its id, or `None` when `max` sessions are
    /// open (expired ones are dropped first).
    pub fn create(&self, version: &'static str) -> Option<String> {
        let mut map = self.lock();
        if map.len() >= self.max {
            let now = Instant::now();
            map.retain(|_, s| now.duration_since(s.last_seen) <= self.timeout);
            if map.len() >= self.max {
                return None;
            }
        }
        let id = mint_id("mcp_");
        map.insert(
            id.clone(),
            McpSession {
                version,
                last_seen: Instant::now(),
            },
        );
        Some(id)
    }

    /// Look up and touch a session. An expired one is removed and reported unknown.
    pub fn touch(&self, id: &str) -> Result<McpSession, Lookup> {
        let mut map = self.lock();
        let now = Instant::now();
        match map.get_mut(id) {
            Some(s) if now.duration_since(s.last_seen) <= self.timeout => {
                s.last_seen = now;
                Ok(s.clone())
            }
            Some(_) => {
                map.remove(id);
                Err(Lookup::Unknown)
            }
            None => Err(Lookup::Unknown),
        }
    }

    /// End a session; false when it did not exist.
    pub fn remove(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    /// Remove sessions idle past the timeout; returns their ids (to release what they own).
    pub fn expire(&self) -> Vec<String> {
        let now = Instant::now();
        let mut map = self.lock();
        let dead: Vec<String> = map
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_seen) > self.timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &dead {
            map.remove(id);
        }
        dead
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_live_until_removed_or_expired() {
        let s = McpSessions::new(Duration::from_millis(50), 100);
        let a = s.create("2025-11-25").expect("room");
        assert_eq!(s.touch(&a).expect("open").version, "2025-11-25");
        assert_eq!(s.touch("mcp_nope").expect_err("unknown"), Lookup::Unknown);
        assert!(s.remove(&a));
        assert!(s.touch(&a).is_err());
        let b = s.create("2025-06-18").expect("room");
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(s.expire(), vec![b.clone()]);
        assert!(s.touch(&b).is_err());
    }

    #[test]
    fn the_cap_holds_and_expired_sessions_make_room() {
        let s = McpSessions::new(Duration::from_millis(50), 2);
        assert!(s.create("2025-11-25").is_some() && s.create("2025-11-25").is_some());
        assert_eq!(s.create("2025-11-25"), None);
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.create("2025-11-25").is_some(), "expired ones make room");
        assert_eq!(s.len(), 1);
    }
}
