//! How many of something each key holds at once: HTTP connections per remote address
//! ([`crate::listener`]), `ssh_connect` attempts in flight per client and per address
//! ([`crate::tools`]). A [`Held`] counts one and gives it back when dropped, so no path can
//! leak a count; a key whose count drops to zero is forgotten, so the map holds only keys that
//! hold something now (at most as many as there are things held).

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

/// Counts per key. Cheap to clone (clones share the counts).
pub struct PerKey<K: Eq + Hash + Clone> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K: Eq + Hash + Clone> Clone for PerKey<K> {
    fn clone(&self) -> Self {
        Self {
            counts: self.counts.clone(),
        }
    }
}

impl<K: Eq + Hash + Clone> Default for PerKey<K> {
    fn default() -> Self {
        Self {
            counts: Arc::default(),
        }
    }
}

impl<K: Eq + Hash + Clone> fmt::Debug for PerKey<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerKey")
            .field("keys", &self.lock().len())
            .finish()
    }
}

/// One thing counted for a key; the count goes down when this is dropped.
pub struct Held<K: Eq + Hash + Clone> {
    counts: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
}

impl<K: Eq + Hash + Clone + fmt::Debug> fmt::Debug for Held<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Held").field(&self.key).finish()
    }
}

fn lock<K>(counts: &Mutex<HashMap<K, usize>>) -> MutexGuard<'_, HashMap<K, usize>> {
    // The counts stay consistent whatever panicked while the lock was held (every change is
    // one insert or one decrement).
    counts.lock().unwrap_or_else(|p| p.into_inner())
}

impl<K: Eq + Hash + Clone> PerKey<K> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        lock(&self.counts)
    }

    /// How many `key` holds now.
    pub fn count(&self, key: &K) -> usize {
        self.lock().get(key).copied().unwrap_or(0)
    }

    /// Counts one more for `key` if `admit` accepts the count it holds now (checked and taken
    /// under one lock); otherwise returns that count.
    pub fn hold_if(&self, key: K, admit: impl FnOnce(usize) -> bool) -> Result<Held<K>, usize> {
        let mut counts = self.lock();
        let n = counts.get(&key).copied().unwrap_or(0);
        if !admit(n) {
            return Err(n);
        }
        counts.insert(key.clone(), n + 1);
        Ok(Held {
            counts: self.counts.clone(),
            key,
        })
    }

    /// Counts one more for `key` unless it already holds `max`; otherwise returns its count.
    pub fn hold(&self, key: K, max: usize) -> Result<Held<K>, usize> {
        self.hold_if(key, |n| n < max)
    }

    /// How many keys hold something.
    pub fn keys(&self) -> usize {
        self.lock().len()
    }
}

impl<K: Eq + Hash + Clone> Drop for Held<K> {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stop_at_the_limit_and_keys_are_forgotten_at_zero() {
        let p = PerKey::<&str>::default();
        let a1 = p.hold("a", 2).expect("room");
        let a2 = p.hold("a", 2).expect("room");
        assert_eq!(p.hold("a", 2).err(), Some(2));
        let b = p.hold("b", 2).expect("another key has its own count");
        assert_eq!((p.count(&"a"), p.count(&"b"), p.keys()), (2, 1, 2));
        drop(a1);
        let a3 = p.hold("a", 2).expect("a slot came back");
        drop((a2, a3, b));
        assert_eq!(p.keys(), 0, "no key left behind");
        assert_eq!(p.hold_if("c", |n| n == 5).err(), Some(0));
    }
}
