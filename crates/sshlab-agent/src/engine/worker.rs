//! One worker: one MCP client, its own handles, one loop that picks an op, makes the call,
//! and sends a [`Record`] to the collector. The same loop serves both load models: in the
//! closed model the next start is "now, after the think time"; in the open model it is the
//! next due time of the shared [`Schedule`].
//!
//! A worker ends with its phase: it starts nothing at or after the phase's deadline (an
//! open-model arrival it could not start by then is counted as dropped, with every arrival
//! still due in the phase), lets a call in flight finish within the grace period after the
//! deadline (one still running then is cut off and recorded as such), and then gives back,
//! unmeasured, every handle it holds. What the server answers decides what happens to a
//! handle (`HandleFate`): a rate-limited call backs off for the server's `Retry-After` and
//! keeps it; a tool error that says the handle is no use ([`Scenario::stale_kinds`], or
//! [`STALE_AFTER`] tool errors in a row) gives it up, and giving up always releases it on the
//! server, retrying a release the server rate-limits.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use sshlab_core::results::{Record, Status, messages};
use sshlab_core::scenario::STALE_AFTER;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Clock;
use super::pacer::Schedule;
use crate::mcp::{McpClient, McpError, ToolResult};
use crate::scenario::segment::Segment;
use crate::scenario::{Mode, OpSpec, Scenario, template};

/// A start later than this past its due time counts as late.
const LATE_SLACK: Duration = Duration::from_millis(10);
/// The wait after a 429 that carries no usable `Retry-After`.
const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait a `Retry-After` can impose on one worker at a time.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The time releasing the handles always gets at the end, even when the grace period is spent.
const MIN_RELEASE: Duration = Duration::from_secs(2);
/// One release call's own timeout.
const RELEASE_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// SSH target placeholders, and the secrets among what the workers send (masked in the
/// failures they record).
#[derive(Debug, Clone)]
pub struct Target {
    /// Host.
    pub host: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
    /// The run's secrets.
    pub secrets: crate::secrets::Secrets,
}

/// Counters the workers of a run share.
#[derive(Debug, Default)]
pub struct Counters {
    /// Open model: starts that were late.
    pub late: AtomicU64,
    /// Open model: arrivals due within the phase that were never sent.
    pub dropped: AtomicU64,
    /// Handles that could not be released on the server (the release kept failing).
    pub unreleased: AtomicU64,
}

/// Everything a worker needs.
pub struct Worker {
    /// Index.
    pub index: usize,
    /// Its client.
    pub client: McpClient,
    /// The scenario.
    pub scenario: Arc<Scenario>,
    /// SSH target.
    pub target: Arc<Target>,
    /// Target port of this phase.
    pub port: u16,
    /// Phase label.
    pub phase: Option<String>,
    /// Records go here.
    pub tx: mpsc::Sender<Record>,
    /// End of the phase: nothing starts at or after it.
    pub deadline: Instant,
    /// How long after the deadline a call in flight may still finish.
    pub grace: Duration,
    /// Ctrl-C.
    pub cancel: CancellationToken,
    /// Open model: the shared schedule and the phase start it is relative to.
    pub schedule: Option<(Arc<Mutex<Schedule>>, Instant)>,
    /// Late starts, dropped arrivals, unreleased handles.
    pub counters: Arc<Counters>,
    /// Instant ↔ wall-clock mapping.
    pub clock: Clock,
    /// Closed model: turns to take before stopping.
    pub iterations: Option<u64>,
    /// `w<index>`, the records' worker label (made once, not per record).
    pub label: String,
    /// This agent's segment, when the test is split across agents.
    pub segment: Option<Segment>,
    /// A capacity step's judge, which sees every record too.
    pub judge: Option<Arc<super::capacity::judge::StepJudge>>,
    /// Counts this worker's calls in flight.
    pub in_flight: super::in_flight::Slot,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("index", &self.index)
            .field("port", &self.port)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

/// The handles a worker holds and the state of its op picking.
struct State {
    /// Handles in use, oldest first.
    handles: VecDeque<String>,
    /// Handles given up whose release has not gone through yet (retried at the end).
    to_release: Vec<String>,
    /// Tool errors in a row on the front handle.
    failures_on_front: u32,
    counter: u64,
    rng: u64,
    cycle: usize,
}

impl State {
    fn new(index: usize) -> Self {
        Self {
            handles: VecDeque::new(),
            to_release: Vec::new(),
            failures_on_front: 0,
            counter: 0,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407),
            cycle: 0,
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: plenty for picking ops by weight.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// How a call ended, as far as the worker's next steps go.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// It succeeded.
    Success,
    /// The tool reported an error of this kind.
    ToolError(String),
    /// The server refused it for its rate limit; wait this long.
    RateLimited(Duration),
    /// No answer that says anything about the handle (transport, timeout, protocol).
    Silent,
}

impl Answer {
    fn of(outcome: &Result<ToolResult, McpError>, scenario: &Scenario) -> Self {
        match outcome {
            Ok(ToolResult {
                is_error: false, ..
            }) => Self::Success,
            Ok(r) => Self::ToolError(scenario.classify_tool_error(&r.text)),
            Err(McpError::RateLimited { retry_after, .. }) => Self::RateLimited(
                retry_after
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_BACKOFF)
                    .min(MAX_BACKOFF),
            ),
            Err(_) => Self::Silent,
        }
    }
}

/// What happens to the handle a call used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HandleFate {
    /// Still good (or not known to be bad): keep using it.
    Keep,
    /// No use any more: release it on the server and forget it.
    GiveUp,
    /// Released (or gone) on the server: forget it.
    Forget,
    /// The release did not go through: forget it here, release it again at the end.
    ReleaseLater,
}

/// The fate of the handle a call used, from the op's role and the answer. `failures` counts
/// the handle's tool errors in a row, this one included.
fn fate(consumes: bool, answer: &Answer, failures: u32, scenario: &Scenario) -> HandleFate {
    match (consumes, answer) {
        // A release the server refused for its rate limit: the handle stays, and the next
        // release (a later consume, or the end of the phase) tries again after the back-off.
        (_, Answer::RateLimited(_)) => HandleFate::Keep,
        (true, Answer::Success | Answer::ToolError(_)) => HandleFate::Forget,
        (true, Answer::Silent) => HandleFate::ReleaseLater,
        (false, Answer::ToolError(kind))
            if scenario.is_stale_kind(kind) || failures >= STALE_AFTER =>
        {
            HandleFate::GiveUp
        }
        (false, _) => HandleFate::Keep,
    }
}

impl Worker {
    /// Run until the deadline, the schedule's end, or cancellation; then release handles.
    pub async fn run(self) {
        let mut st = State::new(self.index);
        let think = Duration::from_millis(self.scenario.think_ms);
        let mut calls = 0u64;
        loop {
            if self.cancel.is_cancelled() || self.iterations.is_some_and(|n| calls >= n) {
                break;
            }
            calls += 1;
            let Some(intended) = self.next_start().await else {
                break;
            };
            let op = self.pick(&mut st);
            if !self.run_op(op, intended, &mut st).await {
                break;
            }
            if !think.is_zero() && self.schedule.is_none() && !self.pause(think).await {
                break;
            }
        }
        self.release_all(&mut st).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.close()).await;
    }

    /// The intended start of the next call, once it is due; `None` when the worker is done.
    /// In the open model, an arrival this worker can only start at or after the deadline is
    /// dropped.
    async fn next_start(&self) -> Option<Instant> {
        let Some((schedule, start)) = &self.schedule else {
            return (Instant::now() < self.deadline).then(Instant::now);
        };
        let due = schedule.lock().await.next()?;
        let intended = *start + Duration::from_secs_f64(due);
        if intended >= self.deadline {
            return None;
        }
        tokio::select! {
            () = tokio::time::sleep_until(intended) => {}
            () = self.cancel.cancelled() => return None,
        }
        let now = Instant::now();
        if now >= self.deadline {
            // Too late to send: dropped, and so is what the phase still had (the engine counts
            // those when the phase's workers are done).
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if now > intended + LATE_SLACK {
            self.counters.late.fetch_add(1, Ordering::Relaxed);
        }
        Some(intended)
    }

    /// Sleep `d`, but never past the deadline; false when cancelled or the deadline came.
    async fn pause(&self, d: Duration) -> bool {
        let until = (Instant::now() + d).min(self.deadline);
        tokio::select! {
            () = tokio::time::sleep_until(until) => Instant::now() < self.deadline,
            () = self.cancel.cancelled() => false,
        }
    }

    fn pick(&self, st: &mut State) -> usize {
        let ops = &self.scenario.ops;
        match self.scenario.mode {
            Mode::Cycle => {
                let i = st.cycle % ops.len();
                st.cycle += 1;
                i
            }
            Mode::Weighted => {
                let total: u64 = ops.iter().map(|o| u64::from(o.weight)).sum();
                let mut r = st.random() % total.max(1);
                for (i, o) in ops.iter().enumerate() {
                    let w = u64::from(o.weight);
                    if r < w {
                        return i;
                    }
                    r -= w;
                }
                0
            }
        }
    }

    fn provider_of(&self, handle: &str) -> Option<usize> {
        self.scenario
            .ops
            .iter()
            .position(|o| o.provides.as_deref() == Some(handle))
    }

    fn consumer_of(&self, handle: &str) -> Option<usize> {
        self.scenario
            .ops
            .iter()
            .position(|o| o.consumes.as_deref() == Some(handle))
    }

    /// Run op `i`, first running what it depends on (a provider when it needs a handle the
    /// worker lacks, a consumer when it would exceed `max_sessions`). Each call is recorded.
    /// Returns false when the worker must stop (cancelled, cut off, or the collector is gone).
    async fn run_op(&self, i: usize, intended: Instant, st: &mut State) -> bool {
        let op = &self.scenario.ops[i];
        let needed = op.needs.as_deref().or(op.consumes.as_deref());
        if let Some(h) = needed
            && st.handles.is_empty()
        {
            // Nothing to use yet: this turn opens one instead.
            return match self.provider_of(h) {
                Some(p) if p != i => Box::pin(self.run_op(p, intended, st)).await,
                _ => true,
            };
        }
        let mut intended = intended;
        if let Some(h) = op.provides.as_deref()
            && st.handles.len() >= self.scenario.max_sessions
        {
            match self.consumer_of(h) {
                Some(c) => {
                    if !Box::pin(self.run_op(c, intended, st)).await {
                        return false;
                    }
                    if st.handles.len() >= self.scenario.max_sessions {
                        // The release did not go through (rate-limited): no new handle now.
                        return true;
                    }
                    // This op was due once the consumer it had to wait for was done: its
                    // corrected latency starts there, not at the turn's start (which would
                    // charge it the consumer's time too; the consumer has its own record).
                    intended = intended.max(Instant::now());
                }
                None => return true,
            }
        }
        let handle = needed.and_then(|_| st.handles.front().cloned());
        let args = self.args(op, handle.as_deref(), st.counter);
        st.counter += 1;
        let start = Instant::now();
        let cut_at = self.deadline + self.grace;
        let in_flight = self.in_flight.enter();
        let outcome = tokio::select! {
            r = tokio::time::timeout_at(cut_at, self.client.call_tool(&op.tool, args)) => r,
            () = self.cancel.cancelled() => return false,
        };
        let end = Instant::now();
        drop(in_flight);
        let Ok(outcome) = outcome else {
            // Still running when the grace period ran out: recorded as cut off, and the
            // worker stops (its phase is over).
            let record = self.record(op, intended, start, end, self.cut_off());
            let _ = self.tx.send(record).await;
            return false;
        };
        let answer = Answer::of(&outcome, &self.scenario);
        if let Some(h) = handle {
            if matches!(answer, Answer::ToolError(_)) {
                st.failures_on_front += 1;
            } else if answer == Answer::Success {
                st.failures_on_front = 0;
            }
            match fate(
                op.consumes.is_some(),
                &answer,
                st.failures_on_front,
                &self.scenario,
            ) {
                HandleFate::Keep => {}
                HandleFate::Forget => self.forget_front(st),
                HandleFate::ReleaseLater => {
                    self.forget_front(st);
                    st.to_release.push(h);
                }
                HandleFate::GiveUp => {
                    self.forget_front(st);
                    if !self.release(&h, cut_at).await {
                        st.to_release.push(h);
                    }
                }
            }
        }
        if let (Some(_), Ok(r)) = (&op.provides, &outcome) {
            let field = op.provides_field.as_deref().unwrap_or("session_id");
            if let Some(h) = r
                .structured
                .as_ref()
                .and_then(|s| s.get(field))
                .and_then(Value::as_str)
                && !r.is_error
            {
                st.handles.push_back(h.to_owned());
            }
        }
        let record = self.record(op, intended, start, end, self.status(&outcome));
        if let Some(j) = &self.judge {
            j.add(&record);
        }
        if self.tx.send(record).await.is_err() {
            return false;
        }
        match answer {
            // Back off as the server asked: this worker's next call waits (in the open model
            // the arrivals due meanwhile start late, and their latency shows it).
            Answer::RateLimited(wait) => self.pause(wait).await,
            _ => true,
        }
    }

    fn forget_front(&self, st: &mut State) {
        st.handles.pop_front();
        st.failures_on_front = 0;
    }

    /// Release `handle` on the server with the op that consumes it, unmeasured, retrying after
    /// the server's `Retry-After` while it rate-limits, until `until`. True when the server
    /// answered (released, or told us the handle is gone).
    async fn release(&self, handle: &str, until: Instant) -> bool {
        let Some(c) = self.scenario.ops.iter().position(|o| o.consumes.is_some()) else {
            return true;
        };
        let op = &self.scenario.ops[c];
        loop {
            let args = self.args(op, Some(handle), 0);
            let call = self.client.call_tool(&op.tool, args);
            let timeout = RELEASE_CALL_TIMEOUT.min(until.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(_)) => return true,
                Ok(Err(McpError::RateLimited { retry_after, .. })) => {
                    let wait = retry_after
                        .filter(|d| !d.is_zero())
                        .unwrap_or(DEFAULT_BACKOFF)
                        .min(MAX_BACKOFF);
                    if Instant::now() + wait >= until {
                        return false;
                    }
                    tokio::time::sleep(wait).await;
                }
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    /// Give back every handle this worker still holds, unmeasured: the next phase, scenario
    /// and run start clean. Bounded by the grace period's end (at least [`MIN_RELEASE`]), or,
    /// after Ctrl-C, by [`MIN_RELEASE`] alone.
    async fn release_all(&self, st: &mut State) {
        let now = Instant::now();
        let until = if self.cancel.is_cancelled() {
            now + MIN_RELEASE
        } else {
            (self.deadline + self.grace).max(now + MIN_RELEASE)
        };
        let all: Vec<String> = st
            .handles
            .drain(..)
            .chain(st.to_release.drain(..))
            .collect();
        let mut left = 0u64;
        for h in &all {
            if Instant::now() >= until || !self.release(h, until).await {
                left += 1;
            }
        }
        if left > 0 {
            self.counters.unreleased.fetch_add(left, Ordering::Relaxed);
            tracing::warn!(
                worker = %self.label,
                handles = left,
                "handles not released on the server (it did not answer in time)"
            );
        }
    }

    /// The status, error kind and message of a finished call.
    fn status(
        &self,
        outcome: &Result<ToolResult, McpError>,
    ) -> (Status, Option<String>, Option<String>) {
        match outcome {
            Ok(ToolResult {
                is_error: false, ..
            }) => (Status::Success, None, None),
            Ok(r) => (
                Status::Error,
                Some(self.scenario.classify_tool_error(&r.text)),
                Some(self.message(&r.text)),
            ),
            Err(e) => (
                Status::Error,
                Some(e.kind().to_owned()),
                Some(self.message(&e.to_string())),
            ),
        }
    }

    /// A failure's message as recorded: cut to length, secrets masked (a server may echo what
    /// it was sent).
    fn message(&self, text: &str) -> String {
        messages::cut(&self.target.secrets.mask(text)).to_owned()
    }

    /// A call abandoned at the end of the grace period.
    fn cut_off(&self) -> (Status, Option<String>, Option<String>) {
        (
            Status::Error,
            Some("cut_off".to_owned()),
            Some(format!(
                "no answer {} s after the phase ended (the grace period); the call was abandoned",
                self.grace.as_secs_f64()
            )),
        )
    }

    fn record(
        &self,
        op: &OpSpec,
        intended: Instant,
        start: Instant,
        end: Instant,
        (status, error_kind, error): (Status, Option<String>, Option<String>),
    ) -> Record {
        Record {
            ts: self.clock.wall(end),
            intended_ts: self.clock.wall(intended.min(start)),
            worker: self.label.clone(),
            op: Scenario::label(op).to_owned(),
            latency_ms: end.duration_since(intended.min(start)).as_secs_f64() * 1000.0,
            service_ms: end.duration_since(start).as_secs_f64() * 1000.0,
            status,
            error_kind,
            error,
            port: Some(self.port),
            phase: self.phase.clone(),
            segment: self.segment,
        }
    }

    fn args(&self, op: &OpSpec, handle: Option<&str>, counter: u64) -> Value {
        let ctx = template::Context {
            target_host: &self.target.host,
            target_port: self.port,
            user: &self.target.user,
            password: &self.target.password,
            session: handle,
            worker: self.index,
            vars: &self.scenario.vars,
            counter: counter + self.index as u64,
        };
        template::render(&op.args, &ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        Scenario::builtin("sustained_load").expect("built-in")
    }

    #[test]
    fn a_rate_limit_never_costs_a_handle() {
        let s = scenario();
        let limited = Answer::RateLimited(Duration::from_secs(1));
        for failures in 0..10 {
            assert_eq!(fate(false, &limited, failures, &s), HandleFate::Keep);
            // A release the server rate-limited keeps the handle, to be released again.
            assert_eq!(fate(true, &limited, failures, &s), HandleFate::Keep);
        }
        assert_eq!(fate(false, &Answer::Silent, 9, &s), HandleFate::Keep);
    }

    #[test]
    fn stale_kinds_give_up_at_once_other_tool_errors_after_three() {
        let s = scenario();
        assert!(s.is_stale_kind("connection_lost"), "{:?}", s.stale_kinds);
        let lost = Answer::ToolError("connection_lost".into());
        assert_eq!(fate(false, &lost, 1, &s), HandleFate::GiveUp);
        let blocked = Answer::ToolError("blocked".into());
        assert_eq!(fate(false, &blocked, 1, &s), HandleFate::Keep);
        assert_eq!(fate(false, &blocked, STALE_AFTER, &s), HandleFate::GiveUp);
    }

    #[test]
    fn a_release_is_forgotten_once_answered_and_retried_when_not() {
        let s = scenario();
        assert_eq!(fate(true, &Answer::Success, 0, &s), HandleFate::Forget);
        let gone = Answer::ToolError("session_gone".into());
        assert_eq!(fate(true, &gone, 1, &s), HandleFate::Forget);
        assert_eq!(fate(true, &Answer::Silent, 0, &s), HandleFate::ReleaseLater);
    }

    #[test]
    fn a_429_backs_off_for_retry_after_bounded() {
        let s = scenario();
        let e = |after: Option<u64>| {
            Answer::of(
                &Err(McpError::RateLimited {
                    retry_after: after.map(Duration::from_secs),
                    message: None,
                }),
                &s,
            )
        };
        assert_eq!(e(Some(3)), Answer::RateLimited(Duration::from_secs(3)));
        assert_eq!(e(None), Answer::RateLimited(DEFAULT_BACKOFF));
        assert_eq!(e(Some(0)), Answer::RateLimited(DEFAULT_BACKOFF));
        assert_eq!(e(Some(3600)), Answer::RateLimited(MAX_BACKOFF));
    }
}
