//! Thread-per-core: the workers run on a few single-threaded runtimes, each on a thread of its
//! own, and each worker's connection lives on the runtime that runs the worker.
//!
//! Why: on tokio's work-stealing runtime a worker's task and the task driving its hyper
//! connection wake each other across threads on every request (the worker queues the request,
//! the connection task writes it, reads the answer and wakes the worker), and each cross-thread
//! wake-up is a futex call. wrk is built the same way (`-t N` event loops, each owning its share
//! of connections). Measured with `perf stat` at 64 connections on 2 cores (3 alternated pairs):
//! the agent's CPU per request went from 20.8–21.7 µs to 18.2–19.1 µs, context switches per
//! request from about 0.5 to 0.24, futex calls per run from 82,719 to 193. When the agent shares
//! its cores with the server, the server pays some of it back (22–23 µs per request before,
//! 24–26 after: the requests arrive in bursts), so requests/s on shared cores did not rise; on
//! separate cores, as in the lab, the agent keeps up with the server.
//!
//! A connection must be made on the shard that will run its worker: a tokio socket belongs to
//! the I/O driver of the runtime it was created on, and hyper's connection task is spawned
//! there. [`Shards::handle`] gives shard `i mod n`'s runtime, so callers give the same `i` for a
//! worker's connect and for its loop. Everything the workers share (the record channel, the
//! open model's schedule, the cancellation token) is runtime-agnostic.

use std::thread::JoinHandle as ThreadHandle;

use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

/// The shard runtimes; dropping this stops them (after their tasks are dropped) and joins
/// their threads.
pub struct Shards {
    shards: Vec<Shard>,
}

struct Shard {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<ThreadHandle<()>>,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards")
            .field("threads", &self.shards.len())
            .finish()
    }
}

impl Shards {
    /// Start `n` (at least one) shard threads.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let mut shards = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            // The runtime is built on its own thread and lives and dies there: a runtime
            // dropped on the caller (an async context) would panic.
            let (ready, handle) = std::sync::mpsc::channel::<std::io::Result<Handle>>();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("sshlab-shard-{i}"))
                .spawn(move || {
                    let rt = match Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready.send(Ok(rt.handle().clone()));
                    // Drives every task spawned on this shard until told to stop, then drops
                    // whatever is left (idle connections' tasks) without waiting for blocking
                    // work such as a DNS lookup still in flight.
                    let _ = rt.block_on(stopped);
                    rt.shutdown_background();
                })?;
            let handle = handle
                .recv()
                .map_err(|_| std::io::Error::other("a shard thread ended before its runtime"))??;
            shards.push(Shard {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Self { shards })
    }

    /// How many shards a run of `workers` (its largest phase) starts: `threads`, else one per
    /// core, never more than `workers` (at least one).
    pub fn count(threads: Option<usize>, workers: usize) -> usize {
        threads
            .unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            })
            .min(workers)
            .max(1)
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: there is at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The runtime of shard `i mod len`: give a worker's connect and its loop the same `i`.
    pub fn handle(&self, i: usize) -> &Handle {
        &self.shards[i % self.shards.len()].handle
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        for s in &mut self.shards {
            if let Some(stop) = s.stop.take() {
                let _ = stop.send(());
            }
        }
        for s in &mut self.shards {
            if let Some(t) = s.thread.take() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A future spawned with index `i` runs on thread `i mod n`, and the same index always
    /// lands on the same thread (a worker's connection and its loop must share a runtime).
    #[tokio::test]
    async fn index_picks_the_thread() {
        let shards = Shards::start(3).expect("start");
        let name = || {
            std::thread::current()
                .name()
                .map(str::to_owned)
                .unwrap_or_default()
        };
        let mut names = Vec::new();
        for i in 0..6 {
            names.push(
                shards
                    .handle(i)
                    .spawn(async move { name() })
                    .await
                    .expect("ran"),
            );
        }
        assert_eq!(
            names,
            [0, 1, 2, 0, 1, 2].map(|i| format!("sshlab-shard-{i}"))
        );
        assert_eq!(Shards::start(0).expect("start").len(), 1);
        assert_eq!(Shards::count(Some(8), 3), 3, "no more shards than workers");
        assert_eq!(Shards::count(Some(2), 0), 1);
    }

    /// Dropping the shards stops their threads even while tasks on them still wait.
    #[tokio::test]
    async fn drop_stops_pending_tasks() {
        let shards = Shards::start(2).expect("start");
        let (tx, rx) = oneshot::channel::<()>();
        let pending = shards.handle(0).spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        drop(shards);
        assert!(pending.await.expect_err("dropped").is_cancelled());
        assert!(rx.await.is_err(), "the task's state was dropped");
    }
}
