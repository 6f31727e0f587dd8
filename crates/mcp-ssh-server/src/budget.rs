//! Command output held in memory, server-wide. Every byte an exec collects is charged to one
//! budget ([`SERVER`], sized by `--max-output-memory-mb`) and given back when the command's
//! [`ExecOutput`](crate::ssh::ExecOutput) is dropped. A command whose output would take the
//! total past the budget fails with [`SshError::Busy`](crate::ssh::SshError::Busy) and its
//! channel is closed. Before, 48 concurrent 16 MiB `ssh_cat_file` reads took the server to
//! 2.8 GB.
//!
//! A large response is charged too, from the moment it is encoded, piece by piece, each piece
//! until hyper has written and dropped it, which frees its memory (see `http::ChargedBody`). That charge is forced (it may pass the budget: the
//! command already ran, and its result is not thrown away), so while responses are still
//! being sent, new commands are refused instead of piling up more output. A client that stops
//! reading is cut off by the write timeout (`--http-write-timeout-ms`), which gives the charge
//! back. The JSON copy a tool makes of its output lives only between two lines of code, with
//! no wait in between, and is not counted.

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

    /// Charges `n` more bytes even past the budget (for output that already exists).
    pub fn force(&mut self, n: usize) {
        self.budget.used.fetch_add(n, Ordering::AcqRel);
        self.bytes += n;
    }

    /// Gives back up to `n` of the bytes held.
    pub fn release(&mut self, n: usize) {
        let n = n.min(self.bytes);
        self.budget.used.fetch_sub(n, Ordering::AcqRel);
        self.bytes -= n;
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

    #[test]
    fn a_forced_charge_passes_the_budget_and_blocks_others_until_released() {
        static B: Budget = Budget::new(100);
        let mut sending = B.charge();
        sending.force(150);
        let mut next = B.charge();
        assert!(!next.grow(1), "nothing new while the budget is overdrawn");
        sending.release(100);
        assert!(next.grow(50));
        sending.release(1000);
        assert_eq!((sending.bytes(), B.used()), (0, 50));
    }
}
