//! SSH sessions handed to MCP clients: server-minted, unguessable handles, each owned by the
//! client that opened it.
//!
//! A handle maps to a pool [`Lease`]. Ownership is an [`Owner`]: the MCP session in the 2025
//! protocol era, the bearer token in the stateless 2026-07-28 era, and for a stateless client
//! without a token the unguessable handle itself ([`Owner::Holder`]: a remote address is shared
//! by every client behind it, so it proves nothing, and such sessions are never listed).
//! Anyone else asking for the handle is told it is not owned. Removing a
//! session drops its lease once in-flight commands finish (they hold an `Arc`), which returns
//! the connection to the pool.
//!
//! A session whose SSH connection is gone (the target closed it, or it stopped answering the
//! health probe) is ended by the server: its slot comes back at once, not after the session
//! timeout. Its owner's next call with the handle is told what happened ("session … ended:
//! connection to … lost: …"), from a bounded record of recently ended sessions.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use rand::RngCore;

use crate::metrics::Metrics;
use crate::pool::Lease;

/// Who owns an SSH session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// An MCP session (2025 protocol era), by its Mcp-Session-Id.
    McpSession(String),
    /// A stateless-era client, by its bearer token (`bearer:<keyed hash>`).
    Client(String),
    /// A stateless-era client without a bearer token: whoever holds the handle.
    Holder,
}

impl Owner {
    /// The owner of what a stateless-era request opens, from its client identity
    /// (`bearer:<hash>` or `addr:<ip>`, see `http::client_identity`).
    pub fn stateless(client: &str) -> Self {
        if client.starts_with("bearer:") {
            Self::Client(client.to_owned())
        } else {
            Self::Holder
        }
    }

    /// Whether a caller who is `self` may use a session owned by `owner`.
    fn may_use(&self, owner: &Owner) -> bool {
        *owner == Owner::Holder || owner == self
    }
}

/// Why a session lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No such handle (never issued, or already closed).
    #[error("session not found: {0}")]
    NotFound(String),
    /// The handle belongs to another client.
    #[error("session not owned by this client: {0}")]
    NotOwned(String),
    /// The server ended the session because its SSH connection was lost.
    #[error("session {id} ended: {reason}")]
    Ended {
        /// The handle.
        id: String,
        /// What happened to its connection.
        reason: String,
    },
}

/// How many ended sessions are remembered for their owners' next call.
const ENDED_KEPT: usize = 4096;

/// Sessions the server ended, newest last, bounded at [`ENDED_KEPT`].
#[derive(Default)]
struct Ended {
    order: std::collections::VecDeque<String>,
    by_id: HashMap<String, (Owner, String)>,
}

impl Ended {
    fn push(&mut self, id: String, owner: Owner, reason: String) {
        if self.by_id.insert(id.clone(), (owner, reason)).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > ENDED_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    /// The error for `id`, told only to its owner (anyone else learns nothing more than that
    /// there is no such session).
    fn error(&self, id: &str, caller: &Owner) -> SessionError {
        match self.by_id.get(id) {
            Some((owner, reason)) if caller.may_use(owner) => SessionError::Ended {
                id: id.to_owned(),
                reason: reason.clone(),
            },
            _ => SessionError::NotFound(id.to_owned()),
        }
    }
}

/// One SSH session.
pub struct SshSession {
    /// The handle given to the client.
    pub id: String,
    /// Its owner.
    pub owner: Owner,
    /// Wall-clock creation time.
    pub created_at: SystemTime,
    lease: Lease,
    last_used: Mutex<Instant>,
}

impl fmt::Debug for SshSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshSession")
            .field("id", &self.id)
            .field("owner", &self.owner)
            .field("key", self.lease.key())
            .finish_non_exhaustive()
    }
}

impl SshSession {
    /// The pooled connection.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }
    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }
    fn idle_for(&self, now: Instant) -> Duration {
        now.duration_since(*self.last_used.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The registry of open SSH sessions.
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<SshSession>>>,
    ended: Mutex<Ended>,
    metrics: Metrics,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("count", &self.len())
            .finish()
    }
}

/// A fresh unguessable handle: 128 random bits, URL-safe.
pub fn mint_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

impl Sessions {
    /// An empty registry.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            ended: Mutex::new(Ended::default()),
            metrics,
        }
    }

    fn not_found(&self, id: &str, caller: &Owner) -> SessionError {
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .error(id, caller)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<SshSession>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register a lease for `owner`; returns the new session.
    pub fn insert(&self, owner: Owner, lease: Lease) -> Arc<SshSession> {
        let session = Arc::new(SshSession {
            id: mint_id("ssh_"),
            owner,
            created_at: SystemTime::now(),
            lease,
            last_used: Mutex::new(Instant::now()),
        });
        let mut map = self.lock();
        map.insert(session.id.clone(), session.clone());
        self.metrics.ssh_sessions_active.set(map.len() as i64);
        session
    }

    /// Look up `id` for `owner`.
    pub fn get(&self, id: &str, owner: &Owner) -> Result<Arc<SshSession>, SessionError> {
        let map = self.lock();
        let Some(s) = map.get(id) else {
            drop(map);
            return Err(self.not_found(id, owner));
        };
        if !owner.may_use(&s.owner) {
            return Err(SessionError::NotOwned(id.to_owned()));
        }
        s.touch();
        Ok(s.clone())
    }

    /// Remove `id` for `owner`.
    pub fn remove(&self, id: &str, owner: &Owner) -> Result<Arc<SshSession>, SessionError> {
        let mut map = self.lock();
        match map.get(id) {
            None => {
                drop(map);
                return Err(self.not_found(id, owner));
            }
            Some(s) if !owner.may_use(&s.owner) => {
                return Err(SessionError::NotOwned(id.to_owned()));
            }
            Some(_) => {}
        }
        let s = map
            .remove(id)
            .ok_or_else(|| SessionError::NotFound(id.to_owned()))?;
        self.metrics.ssh_sessions_active.set(map.len() as i64);
        Ok(s)
    }

    /// Remove every session of `owner` (its MCP session ended); returns how many.
    pub fn remove_owned_by(&self, owner: &Owner) -> usize {
        self.remove_where(|s| &s.owner == owner)
    }

    /// Remove sessions unused for longer than `timeout`; returns how many.
    pub fn remove_idle(&self, timeout: Duration) -> usize {
        let now = Instant::now();
        self.remove_where(|s| s.idle_for(now) > timeout)
    }

    /// Remove all (shutdown).
    pub fn clear(&self) -> usize {
        self.remove_where(|_| true)
    }

    /// End session `id` because its connection is gone (`reason` says how); its owner's next
    /// call is told so. False when it was already gone.
    pub fn end(&self, id: &str, reason: &str) -> bool {
        let removed = {
            let mut map = self.lock();
            let s = map.remove(id);
            self.metrics.ssh_sessions_active.set(map.len() as i64);
            s
        };
        let Some(s) = removed else {
            return false;
        };
        s.lease().mark_broken();
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).push(
            s.id.clone(),
            s.owner.clone(),
            reason.to_owned(),
        );
        true
    }

    /// End every session whose SSH connection has closed; returns how many.
    pub fn end_closed(&self) -> usize {
        let closed: Vec<(String, String)> = self
            .lock()
            .values()
            .filter(|s| s.lease().conn().is_closed())
            .map(|s| {
                (
                    s.id.clone(),
                    format!(
                        "connection to {} lost: it closed (the SSH server ended it, or the \
                         network dropped it)",
                        s.lease().conn().target().addr()
                    ),
                )
            })
            .collect();
        closed.iter().filter(|(id, why)| self.end(id, why)).count()
    }

    /// Every open session (for the health probe).
    pub fn all(&self) -> Vec<Arc<SshSession>> {
        self.lock().values().cloned().collect()
    }

    fn remove_where(&self, pred: impl Fn(&SshSession) -> bool) -> usize {
        // Leases are dropped after the lock is released: dropping one takes the pool's lock.
        let removed: Vec<Arc<SshSession>> = {
            let mut map = self.lock();
            let ids: Vec<String> = map
                .values()
                .filter(|s| pred(s))
                .map(|s| s.id.clone())
                .collect();
            let removed = ids.iter().filter_map(|id| map.remove(id)).collect();
            self.metrics.ssh_sessions_active.set(map.len() as i64);
            removed
        };
        removed.len()
    }

    /// Sessions of `owner`, oldest first; none for [`Owner::Holder`] (nothing tells one holder
    /// from another, so a list would hand every handle to everyone).
    pub fn list(&self, owner: &Owner) -> Vec<Arc<SshSession>> {
        if *owner == Owner::Holder {
            return Vec::new();
        }
        let mut v: Vec<_> = self
            .lock()
            .values()
            .filter(|s| &s.owner == owner)
            .cloned()
            .collect();
        v.sort_by_key(|s| s.created_at);
        v
    }

    /// How many sessions are open.
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
    fn an_address_never_owns_anything() {
        assert_eq!(Owner::stateless("addr:127.0.0.1"), Owner::Holder);
        let alice = Owner::stateless("bearer:00ff");
        assert_eq!(alice, Owner::Client("bearer:00ff".into()));
        // A holder's handle works for whoever presents it; nobody else's works for a holder.
        assert!(Owner::Holder.may_use(&Owner::Holder));
        assert!(alice.may_use(&Owner::Holder));
        assert!(!Owner::Holder.may_use(&alice));
        assert!(!Owner::Holder.may_use(&Owner::McpSession("s".into())));
        assert!(!alice.may_use(&Owner::Client("bearer:0bob".into())));
    }

    #[test]
    fn minted_ids_are_long_and_distinct() {
        let a = mint_id("ssh_");
        let b = mint_id("ssh_");
        assert_ne!(a, b);
        assert!(a.starts_with("ssh_") && a.len() == 4 + 22, "{a}");
    }
}
