//! A connection's send deadline: how long a large response may take to be handed to the
//! socket in full (the last piece and what the kernel buffers are outside it; they are no
//! longer charged), however steadily the client reads.
//!
//! The write timeout only bounds one stalled write, so a client that reads a little now and
//! then holds its response, and the output budget charged for it, for as long as it likes. A
//! large response arms its connection's deadline when it is created
//! ([`SendDeadline::arm`], sized by [`crate::listener::HttpLimits::send_deadline`]) and
//! disarms it when it is done or dropped; the task driving the connection waits on
//! [`Expiry::expired`] next to the connection and drops the connection when it fires, which
//! drops the response and gives its charge back. It has to be the connection's task: while the
//! client is not reading, hyper does not ask the body for anything, so the body alone could
//! not notice the time.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

/// What the watch holds: which arming it is (so a response disarms only its own) and when.
type State = (u64, Option<Instant>);

/// A connection's deadline, handed to each of its requests as an extension.
#[derive(Debug, Clone)]
pub struct SendDeadline(Arc<watch::Sender<State>>);

/// The deadline as armed by one response; dropping it disarms it, unless a later response
/// has armed it since.
#[derive(Debug)]
pub struct Armed {
    tx: Arc<watch::Sender<State>>,
    generation: u64,
}

/// The connection task's side.
#[derive(Debug)]
pub struct Expiry(watch::Receiver<State>);

impl SendDeadline {
    /// A disarmed deadline for a new connection, and the side that waits on it.
    pub fn new() -> (Self, Expiry) {
        let (tx, rx) = watch::channel((0, None));
        (Self(Arc::new(tx)), Expiry(rx))
    }

    /// The response being sent must be done by `at`.
    pub fn arm(&self, at: Instant) -> Armed {
        let mut generation = 0;
        self.0.send_modify(|(g, until)| {
            *g += 1;
            generation = *g;
            *until = Some(at);
        });
        Armed {
            tx: self.0.clone(),
            generation,
        }
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.tx.send_if_modified(|(g, until)| {
            let mine = *g == self.generation;
            if mine {
                *until = None;
            }
            mine
        });
    }
}

impl Expiry {
    /// Resolves once an armed deadline has passed; never while disarmed.
    pub async fn expired(&mut self) {
        loop {
            let at = self.0.borrow_and_update().1;
            let changed = match at {
                None => self.0.changed().await,
                Some(t) => tokio::select! {
                    () = tokio::time::sleep_until(t) => return,
                    r = self.0.changed() => r,
                },
            };
            if changed.is_err() {
                // Every sender is gone: nothing can arm it again.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_only_while_armed() {
        let (deadline, mut expiry) = SendDeadline::new();
        let never = tokio::time::timeout(Duration::from_secs(60), expiry.expired()).await;
        assert!(never.is_err(), "fired while disarmed");

        let armed = deadline.arm(Instant::now() + Duration::from_secs(5));
        drop(armed);
        let never = tokio::time::timeout(Duration::from_secs(60), expiry.expired()).await;
        assert!(never.is_err(), "fired after the response was done");

        let start = Instant::now();
        let _armed = deadline.arm(start + Duration::from_secs(5));
        expiry.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    /// A response dropped after the next one armed the deadline leaves the newer one armed.
    #[tokio::test(start_paused = true)]
    async fn an_older_response_does_not_disarm_a_newer_one() {
        let (deadline, mut expiry) = SendDeadline::new();
        let start = Instant::now();
        let first = deadline.arm(start + Duration::from_secs(5));
        let _second = deadline.arm(start + Duration::from_secs(7));
        drop(first);
        expiry.expired().await;
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }

    /// A deadline armed while the connection task already waits is seen.
    #[tokio::test(start_paused = true)]
    async fn arming_wakes_the_waiter() {
        let (deadline, mut expiry) = SendDeadline::new();
        let waiter = tokio::spawn(async move { expiry.expired().await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _armed = deadline.arm(Instant::now() + Duration::from_secs(2));
        tokio::time::timeout(Duration::from_secs(3), waiter)
            .await
            .expect("fired")
            .expect("joined");
    }
}
