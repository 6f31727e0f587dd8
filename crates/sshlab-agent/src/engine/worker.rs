//! One worker: one MCP client, its own handles, one loop that picks an op, makes the call,
//! and sends a [`Record`] to the collector. The same loop serves both load models: in the
//! closed model the next start is "now, after the think time"; in the open model it is the
//! next due time of the shared [`Schedule`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use sshlab_core::results::{Record, Status, messages};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Clock;
use super::pacer::Schedule;
use crate::mcp::{McpClient, ToolResult};
use crate::scenario::segment::Segment;
use crate::scenario::{Mode, OpSpec, Scenario, template};

/// A start later than this past its due time counts as late.
const LATE_SLACK: Duration = Duration::from_millis(10);
/// Consecutive failures on one handle after which it is dropped as stale.
const STALE_AFTER: u32 = 3;

/// SSH target placeholders.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host.
    pub host: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
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
    /// End of the phase.
    pub deadline: Instant,
    /// Ctrl-C.
    pub cancel: CancellationToken,
    /// Open model: the shared schedule and the phase start it is relative to.
    pub schedule: Option<(Arc<Mutex<Schedule>>, Instant)>,
    /// Open model: starts that were late.
    pub late: Arc<AtomicU64>,
    /// Instant ↔ wall-clock mapping.
    pub clock: Clock,
    /// Closed model: turns to take before stopping.
    pub iterations: Option<u64>,
    /// `w<index>`, the records' worker label (made once, not per record).
    pub label: String,
    /// This agent's segment, when the test is split across agents.
    pub segment: Option<Segment>,
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

struct State {
    handles: VecDeque<String>,
    failures_on_front: u32,
    counter: u64,
    rng: u64,
    cycle: usize,
}

impl State {
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

impl Worker {
    /// Run until the deadline, the schedule's end, or cancellation; then release handles.
    pub async fn run(self) {
        let mut st = State {
            handles: VecDeque::new(),
            failures_on_front: 0,
            counter: 0,
            rng: 0x9E37_79B9_7F4A_7C15
                ^ (self.index as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407),
            cycle: 0,
        };
        let think = Duration::from_millis(self.scenario.think_ms);
        let mut calls = 0u64;
        loop {
            if self.cancel.is_cancelled() || self.iterations.is_some_and(|n| calls >= n) {
                break;
            }
            calls += 1;
            let intended = match &self.schedule {
                Some((schedule, start)) => {
                    let due = schedule.lock().await.next();
                    match due {
                        Some(offset) => *start + Duration::from_secs_f64(offset),
                        None => break,
                    }
                }
                None => Instant::now(),
            };
            if intended >= self.deadline {
                break;
            }
            if self.schedule.is_some() {
                tokio::select! {
                    () = tokio::time::sleep_until(intended) => {}
                    () = self.cancel.cancelled() => break,
                }
                if Instant::now() > intended + LATE_SLACK {
                    self.late.fetch_add(1, Ordering::Relaxed);
                }
            }
            let op = self.pick(&mut st);
            if !self.run_op(op, intended, &mut st).await {
                break;
            }
            if !think.is_zero() && self.schedule.is_none() {
                tokio::select! {
                    () = tokio::time::sleep(think) => {}
                    () = self.cancel.cancelled() => break,
                }
            }
        }
        // Give back what this worker holds, unmeasured: the next phase starts clean.
        if let Some(release) = self.scenario.ops.iter().position(|o| o.consumes.is_some()) {
            while let Some(h) = st.handles.pop_front() {
                let args = self.args(&self.scenario.ops[release], Some(&h), &st);
                let call = self
                    .client
                    .call_tool(&self.scenario.ops[release].tool, args);
                let _ = tokio::time::timeout(Duration::from_secs(5), call).await;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.client.close()).await;
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
    /// Returns false when cancelled.
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
                    // This op was due once the consumer it had to wait for was done: its
                    // corrected latency starts there, not at the turn's start (which would
                    // charge it the consumer's time too; the consumer has its own record).
                    intended = intended.max(Instant::now());
                }
                None => return true,
            }
        }
        let handle = needed.and_then(|_| st.handles.front().cloned());
        let args = self.args(op, handle.as_deref(), st);
        st.counter += 1;
        let start = Instant::now();
        let outcome = tokio::select! {
            r = self.client.call_tool(&op.tool, args) => r,
            () = self.cancel.cancelled() => return false,
        };
        let end = Instant::now();
        let (status, error_kind, error) = match &outcome {
            Ok(ToolResult {
                is_error: false, ..
            }) => (Status::Success, None, None),
            Ok(r) => (
                Status::Error,
                Some(self.scenario.classify_tool_error(&r.text)),
                Some(messages::cut(&r.text).to_owned()),
            ),
            Err(e) => (
                Status::Error,
                Some(e.kind().to_owned()),
                Some(messages::cut(&e.to_string()).to_owned()),
            ),
        };
        // Handle bookkeeping.
        if op.consumes.is_some() {
            st.handles.pop_front();
            st.failures_on_front = 0;
        } else if handle.is_some() {
            if status == Status::Success {
                st.failures_on_front = 0;
            } else {
                st.failures_on_front += 1;
                if st.failures_on_front >= STALE_AFTER {
                    st.handles.pop_front();
                    st.failures_on_front = 0;
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
        let record = Record {
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
        };
        self.tx.send(record).await.is_ok()
    }

    fn args(&self, op: &OpSpec, handle: Option<&str>, st: &State) -> Value {
        let ctx = template::Context {
            target_host: &self.target.host,
            target_port: self.port,
            user: &self.target.user,
            password: &self.target.password,
            session: handle,
            worker: self.index,
            vars: &self.scenario.vars,
            counter: st.counter + self.index as u64,
        };
        template::render(&op.args, &ctx)
    }
}
