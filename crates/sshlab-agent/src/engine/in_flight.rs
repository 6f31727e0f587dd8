//! The calls in flight, for the live dashboard's `/metrics`: each worker counts its call up
//! before sending and down once it is answered (or abandoned).
//!
//! One counter per shard, each on a cache line of its own. A worker runs on shard
//! `index mod shards` ([`super::shards::Shards::handle`]) and uses that shard's counter, so
//! every counter is written by one thread only and never bounces between cores; the only other
//! access is a scrape's read, about once a second. One shared counter would be written from
//! every core twice per call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A counter alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

/// The calls in flight of a run, per shard.
#[derive(Debug)]
pub struct InFlight {
    slots: Box<[Padded]>,
}

impl InFlight {
    /// Counters for `shards` shards (at least one).
    pub fn new(shards: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: (0..shards.max(1)).map(|_| Padded::default()).collect(),
        })
    }

    /// The counter worker `index` uses (its shard's).
    pub fn slot(self: &Arc<Self>, index: usize) -> Slot {
        Slot {
            all: self.clone(),
            i: index % self.slots.len(),
        }
    }

    /// Calls in flight now. Each counter is counted up before it is counted down, on the same
    /// counter, so the sum is never negative; it may be a call off while they move.
    pub fn now(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// One worker's counter.
#[derive(Debug, Clone)]
pub struct Slot {
    all: Arc<InFlight>,
    i: usize,
}

impl Slot {
    /// Counts a call up until the guard is dropped (answered, cut off or cancelled alike).
    pub fn enter(&self) -> Guard<'_> {
        self.all.slots[self.i].0.fetch_add(1, Ordering::Relaxed);
        Guard(&self.all.slots[self.i].0)
    }
}

/// A call in flight; counted down on drop.
#[derive(Debug)]
pub struct Guard<'a>(&'a AtomicU64);

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_and_down_per_shard() {
        let f = InFlight::new(2);
        let (a, b, c) = (f.slot(0), f.slot(1), f.slot(2));
        let g1 = a.enter();
        let g2 = b.enter();
        {
            let _g3 = c.enter();
            assert_eq!(f.now(), 3);
        }
        assert_eq!(f.now(), 2);
        drop((g1, g2));
        assert_eq!(f.now(), 0);
        assert_eq!(std::mem::align_of::<Padded>(), 64);
    }
}
