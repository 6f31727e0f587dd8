//! Command output held in memory, server-wide. Every byte an exec collects is charged to one
//! budget ([`SERVER`], sized by `--max-output-memory-mb`) and given back when the command's
//! [`ExecOutput`](super::ExecOutput) is dropped. A command whose output would take the total past
//! the budget fails with [`SshError::Busy`](super::SshError::Busy) and its channel is closed.
//! Before, 48 concurrent 16 MiB `ssh_cat_file` reads took the server to 2.8 GB.
//!
//! The budget covers collection, the phase whose size scales with concurrency times output;
//! the copies a tool makes into its JSON result, and the response hyper is still sending, are
//! not counted.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Default budget: 256 MiB.
pub const DEFAULT_MAX: usize = 256 * 1024 * 1024;

/// A byte budget.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    max: AtomicUsize,
}

/// The server's.
pub static SERVER: Budget = Budget::new(DEFAULT_MAX);

impl Budget {
    /// A budget of `max` bytes, none used.
    pub const fn new(max: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        }
    }

    /// Sets the size (at startup).
    pub fn set_max(&self, bytes: usize) {
        self.max.store(bytes, Ordering::Relaxed);
    }

    /// The size, in bytes.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty charge against this budget.
    pub fn charge(&'static self) -> Charge {
        Charge {
            budget: self,
            bytes: 0,
        }
    }
}

/// Bytes one command holds; given back on drop.
#[derive(Debug)]
pub struct Charge {
    budget: &'static Budget,
    bytes: usize,
}

impl Charge {
    /// Charges `n` more bytes; `false` (nothing charged) when the budget would be exceeded.
    pub fn grow(&mut self, n: usize) -> bool {
        let max = self.budget.max();
        let taken = self
            .budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= max)
            });
        if taken.is_ok() {
            self.bytes += n;
        }
        taken.is_ok()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stop_at_the_budget_and_come_back_on_drop() {
        static B: Budget = Budget::new(100);
        let mut a = B.charge();
        assert!(a.grow(60));
        let mut b = B.charge();
        assert!(!b.grow(41), "past the budget");
        assert!(b.grow(40));
        assert_eq!((a.bytes(), b.bytes(), B.used()), (60, 40, 100));
        drop(a);
        assert!(b.grow(60));
        drop(b);
        assert_eq!(B.used(), 0);
    }
}
