//! `ssh_pool_stats`: the pool's counters, and the connection counts of the caller's own
//! targets (those of the SSH sessions it holds): one client learns nothing of which hosts the
//! others use (before, every client's `user@host:port` was listed to anyone).

use std::collections::HashSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CallCtx, ToolError, ToolOutput, ToolSpec, schema_of};
use crate::pool::PoolKey;

pub(super) const SPEC: ToolSpec = ToolSpec {
    name: "ssh_pool_stats",
    title: "Connection pool statistics",
    description: "Pool hits, misses, creates, health-check failures, and connection counts \
                  of the targets of your own sessions; optionally only those on one host.",
    read_only: true,
    input: schema_of::<Args>,
    output: schema_of::<Output>,
};

/// Arguments.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    /// Only targets on this host.
    #[serde(default)]
    host: Option<String>,
}

/// Counters since the server started.
#[derive(Debug, Serialize, JsonSchema)]
struct Totals {
    hits: u64,
    misses: u64,
    creates: u64,
    health_fails: u64,
    expires: u64,
    exhausted: u64,
}

/// One target's connections.
#[derive(Debug, Serialize, JsonSchema)]
struct TargetInfo {
    /// `user@host:port`.
    target: String,
    idle: usize,
    active: usize,
    connecting: usize,
}

/// Result.
#[derive(Debug, Serialize, JsonSchema)]
struct Output {
    totals: Totals,
    max_per_target: usize,
    max_total: usize,
    pools: Vec<TargetInfo>,
}

pub(super) async fn call(ctx: &CallCtx<'_>, args: Args) -> Result<ToolOutput, ToolError> {
    let m = &ctx.app.metrics;
    // A caller without an identity (a stateless client without a token) lists no session, so
    // it sees no target.
    let mine: HashSet<PoolKey> = ctx
        .app
        .sessions
        .list(ctx.owner)
        .iter()
        .map(|s| s.lease().key().clone())
        .collect();
    let pools: Vec<TargetInfo> = ctx
        .app
        .pool
        .stats()
        .into_iter()
        .filter(|(k, _)| mine.contains(k))
        .filter(|(k, _)| args.host.as_ref().is_none_or(|h| &k.host == h))
        .map(|(k, s)| TargetInfo {
            target: k.to_string(),
            idle: s.idle,
            active: s.active,
            connecting: s.connecting,
        })
        .collect();
    let out = Output {
        totals: Totals {
            hits: m.pool_hits.get(),
            misses: m.pool_misses.get(),
            creates: m.pool_creates.get(),
            health_fails: m.pool_health_fails.get(),
            expires: m.pool_expires.get(),
            exhausted: m.pool_exhausted.get(),
        },
        max_per_target: ctx.app.pool.limits().max_per_target,
        max_total: ctx.app.pool.limits().max_total,
        pools,
    };
    let text = format!(
        "Pool: {} hits, {} misses, {} creates, {} health failures; {} target(s)",
        out.totals.hits,
        out.totals.misses,
        out.totals.creates,
        out.totals.health_fails,
        out.pools.len()
    );
    Ok(ToolOutput::new(text, &out))
}
