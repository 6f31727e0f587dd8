//! A connection's send deadline: how long a large response may take to reach its client in
//! full, however steadily the client reads.
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

/// A connection's deadline, handed to each of its requests as an extension.
#[derive(Debug, Clone)]
pub struct SendDeadline(Arc<watch::Sender<Option<Instant>>>);

/// The deadline as armed by one response; dropping it disarms it.
#[derive(Debug)]
pub struct Armed(Arc<watch::Sender<Option<Instant>>>);

/// The connection task's side.
#[derive(Debug)]
pub struct Expiry(watch::Receiver<Option<Instant>>);

impl SendDeadline {
    /// A disarmed deadline for a new connection, and the side that waits on it.
    pub fn new() -> (Self, Expiry) {
        let (tx, rx) = watch::channel(None);
        (Self(Arc::new(tx)), Expiry(rx))
    }

    /// The response being sent must be done by `at`.
    pub fn arm(&self, at: Instant) -> Armed {
        self.0.send_replace(Some(at));
        Armed(self.0.clone())
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.0.send_replace(None);
    }
}

impl Expiry {
    /// Resolves once an armed deadline has passed; never while disarmed.
    pub async fn expired(&mut self) {
        loop {
            let at = *self.0.borrow_and_update();
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
