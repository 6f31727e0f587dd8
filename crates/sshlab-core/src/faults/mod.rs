//! Faults during a run, written once for the host that executes them and the agent that
//! records them: the spec a user writes ([`FaultSpec`], `KIND:TARGET@START+DURATION`, or a
//! scenario's `[[fault]]`), checked against the lab before anything starts; the record of what
//! was executed ([`FaultRecord`], `faults` in summary.json), which the host hands to the agent
//! through the job API; and the judgement of each fault from the run's records
//! ([`recovery`]: errors and latency while it lasted, and how long the system took to recover).
//!
//! Kinds:
//! - `sshd-kill:PORT` kills the target sshd that serves `PORT` (its base port or netem twin)
//!   together with every session it serves, as a crash would, and starts it again at the end;
//! - `partition:VM` cuts one VM off the bridge (its link down) and restores it;
//! - `mcp-pause` freezes the MCP server (SIGSTOP, or the hypervisor's pause) and resumes it;
//! - `mcp-restart` kills the MCP server and starts it again, at the end, the way `vm up` did;
//! - `netem:PORT:delay=200ms,jitter=20ms,loss=5%,...` gives a port's traffic other network
//!   conditions for the duration (netem/profiles.toml stays the lab's; this overrides it).

pub mod recovery;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Topology;

/// Why a fault spec is refused (before anything starts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault `{spec}`: {message}")]
pub struct FaultError {
    /// The spec as given.
    pub spec: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Kill one target sshd with its sessions; start it again at the end.
    SshdKill,
    /// Cut a VM off the bridge; restore it at the end.
    Partition,
    /// Freeze the MCP server; resume it at the end.
    McpPause,
    /// Kill the MCP server; start it again at the end.
    McpRestart,
    /// Other network conditions on a target port; the profile again at the end.
    Netem,
}

impl FaultKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::SshdKill,
        FaultKind::Partition,
        FaultKind::McpPause,
        FaultKind::McpRestart,
        FaultKind::Netem,
    ];

    /// Its name in specs and reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::SshdKill => "sshd-kill",
            FaultKind::Partition => "partition",
            FaultKind::McpPause => "mcp-pause",
            FaultKind::McpRestart => "mcp-restart",
            FaultKind::Netem => "netem",
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The network conditions a `netem` fault sets on its port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetemChange {
    /// Delay, ms.
    #[serde(default)]
    pub delay_ms: u32,
    /// Jitter, ms.
    #[serde(default)]
    pub jitter_ms: u32,
    /// Loss, percent.
    #[serde(default)]
    pub loss_percent: f64,
    /// Bandwidth limit, kbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_kbit: Option<u64>,
    /// The delay's distribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<crate::netem::Distribution>,
    /// Packets sent without the delay, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder_percent: Option<f64>,
    /// Packets sent twice, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_percent: Option<f64>,
    /// Packets with a bit flipped, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt_percent: Option<f64>,
}

/// The keys of a netem fault's settings, as `netem:PORT:KEY=VALUE,...` takes them.
const NETEM_KEYS: &str = "delay, jitter, loss, rate, distribution, reorder, duplicate, corrupt";

impl NetemChange {
    /// Parses `delay=200ms,jitter=20ms,loss=5%` (and `rate=1000kbit`, `distribution=normal`,
    /// `reorder=25%`, `duplicate=1%`, `corrupt=0.1%`).
    fn parse(text: &str) -> Result<Self, String> {
        let mut c = Self::default();
        let percent = |key: &str, value: &str| {
            value
                .strip_suffix('%')
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| (0.0..=100.0).contains(v))
                .ok_or_else(|| format!("{key} `{value}`: a percentage, e.g. 5%"))
        };
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                format!("`{part}`: give KEY=VALUE (delay=200ms, jitter=20ms, loss=5%)")
            })?;
            match key {
                "delay" => {
                    c.delay_ms = millis(value)
                        .ok_or_else(|| format!("delay `{value}`: milliseconds, e.g. 200ms"))?
                }
                "jitter" => {
                    c.jitter_ms = millis(value)
                        .ok_or_else(|| format!("jitter `{value}`: milliseconds, e.g. 20ms"))?
                }
                "loss" => c.loss_percent = percent(key, value)?,
                "reorder" => c.reorder_percent = Some(percent(key, value)?),
                "duplicate" => c.duplicate_percent = Some(percent(key, value)?),
                "corrupt" => c.corrupt_percent = Some(percent(key, value)?),
                "rate" => {
                    c.rate_kbit = Some(
                        value
                            .strip_suffix("kbit")
                            .and_then(|v| v.parse::<u64>().ok())
                            .filter(|v| *v > 0)
                            .ok_or_else(|| format!("rate `{value}`: kbit/s, e.g. 1000kbit"))?,
                    )
                }
                "distribution" => c.distribution = Some(value.parse()?),
                other => {
                    return Err(format!(
                        "unknown netem setting `{other}` (known: {NETEM_KEYS})"
                    ));
                }
            }
        }
        c.check()?;
        Ok(c)
    }

    /// The checks every change gets, parsed or read from a `[[fault]]` table: something to
    /// change, values in range, and the lab's profile rules.
    fn check(&self) -> Result<(), String> {
        let c = self;
        if *c == Self::default() {
            return Err(format!("netem needs at least one of {NETEM_KEYS}"));
        }
        for (key, p) in [
            ("loss", Some(c.loss_percent)),
            ("reorder", c.reorder_percent),
            ("duplicate", c.duplicate_percent),
            ("corrupt", c.corrupt_percent),
        ] {
            if p.is_some_and(|p| !(0.0..=100.0).contains(&p)) {
                return Err(format!("{key}: a percentage from 0 to 100"));
            }
        }
        if c.delay_ms > 60_000 || c.jitter_ms > 60_000 {
            return Err("delay and jitter: at most 60000 ms".into());
        }
        if c.rate_kbit == Some(0) {
            return Err("rate: more than 0 kbit/s".into());
        }
        if c.duplicate_percent.is_some_and(|d| d > 0.0) {
            // The lab's other profiles' netems share the tree.
            return Err(format!(
                "duplicate= cannot be a fault in the lab: {}",
                crate::netem::DUPLICATE_ALONE
            ));
        }
        // The profile rules, written once (netem/profiles.toml's): jitter within the delay, a
        // distribution with a jitter, reordering with a delay.
        crate::netem::NetemProfiles {
            profiles: vec![c.to_profile(1, 2)],
        }
        .validate("netem fault")
        .map_err(|e| e.to_string())
    }

    /// The profile this change puts on `port` (whose sshd's clean port is `base`).
    pub fn to_profile(&self, base: u16, port: u16) -> crate::netem::NetemProfile {
        crate::netem::NetemProfile {
            base,
            port,
            delay_ms: self.delay_ms,
            jitter_ms: self.jitter_ms,
            loss_percent: self.loss_percent,
            rate_kbit: self.rate_kbit,
            distribution: self.distribution,
            reorder_percent: self.reorder_percent,
            duplicate_percent: self.duplicate_percent,
            corrupt_percent: self.corrupt_percent,
            description: "netem fault".into(),
            ..Default::default()
        }
    }
}

fn millis(v: &str) -> Option<u32> {
    v.strip_suffix("ms")?
        .parse()
        .ok()
        .filter(|ms| *ms <= 60_000)
}

/// A fault to run: `KIND:TARGET@START+DURATION` (`sshd-kill:2222@20s+10s`), or a scenario's
/// `[[fault]]` table with the same fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What it does.
    pub kind: FaultKind,
    /// What it acts on: a target port (`2222`) or a VM (`mcp`).
    pub target: String,
    /// Seconds from the run's start.
    pub start_s: f64,
    /// Seconds it lasts.
    pub duration_s: f64,
    /// `netem`: the conditions to set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netem: Option<NetemChange>,
}

/// Seconds: `20s`, `1.5s`, `500ms`, `2m`.
fn seconds(v: &str) -> Option<f64> {
    let s = if let Some(ms) = v.strip_suffix("ms") {
        ms.parse::<f64>().ok()? / 1000.0
    } else if let Some(m) = v.strip_suffix('m') {
        m.parse::<f64>().ok()? * 60.0
    } else {
        v.strip_suffix('s').unwrap_or(v).parse::<f64>().ok()?
    };
    (s.is_finite() && s >= 0.0).then_some(s)
}

impl FromStr for FaultSpec {
    type Err = FaultError;

    fn from_str(spec: &str) -> Result<Self, FaultError> {
        let err = |message: String| FaultError {
            spec: spec.to_owned(),
            message,
        };
        let (what, when) = spec.rsplit_once('@').ok_or_else(|| {
            err("give KIND:TARGET@START+DURATION, e.g. sshd-kill:2222@20s+10s".into())
        })?;
        let (start, duration) = when
            .split_once('+')
            .ok_or_else(|| err(format!("`{when}`: give START+DURATION, e.g. 20s+10s")))?;
        let start_s = seconds(start).ok_or_else(|| err(format!("start `{start}`: e.g. 20s")))?;
        let duration_s = seconds(duration)
            .filter(|d| *d > 0.0)
            .ok_or_else(|| err(format!("duration `{duration}`: more than 0, e.g. 10s")))?;
        let (kind, rest) = what.split_once(':').unwrap_or((what, ""));
        let kind = FaultKind::from_name(kind).ok_or_else(|| {
            err(format!(
                "unknown kind `{kind}` (known: {})",
                FaultKind::ALL.map(FaultKind::name).join(", ")
            ))
        })?;
        let (target, netem) = match kind {
            FaultKind::Netem => {
                let (port, settings) = rest.split_once(':').ok_or_else(|| {
                    err("netem:PORT:delay=200ms,jitter=20ms,loss=5%@START+DURATION".into())
                })?;
                (port, Some(NetemChange::parse(settings).map_err(err)?))
            }
            FaultKind::McpPause | FaultKind::McpRestart if rest.is_empty() => ("mcp", None),
            _ => (rest, None),
        };
        if target.is_empty() {
            return Err(err(format!(
                "{kind} needs a target: {kind}:TARGET@START+DURATION"
            )));
        }
        Ok(Self {
            kind,
            target: target.to_owned(),
            start_s,
            duration_s,
            netem,
        })
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.target)?;
        if let Some(n) = &self.netem {
            let mut parts = Vec::new();
            if n.delay_ms > 0 {
                parts.push(format!("delay={}ms", n.delay_ms));
            }
            if n.jitter_ms > 0 {
                parts.push(format!("jitter={}ms", n.jitter_ms));
            }
            if n.loss_percent > 0.0 {
                parts.push(format!("loss={}%", n.loss_percent));
            }
            if let Some(r) = n.rate_kbit {
                parts.push(format!("rate={r}kbit"));
            }
            if let Some(d) = n.distribution {
                parts.push(format!("distribution={}", d.name()));
            }
            for (key, p) in [
                ("reorder", n.reorder_percent),
                ("duplicate", n.duplicate_percent),
                ("corrupt", n.corrupt_percent),
            ] {
                if let Some(p) = p {
                    parts.push(format!("{key}={p}%"));
                }
            }
            write!(f, ":{}", parts.join(","))?;
        }
        write!(f, "@{}s+{}s", self.start_s, self.duration_s)
    }
}

/// What a fault acts on, resolved against the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A target sshd: its role and base port (the port given may be its netem twin).
    Sshd {
        /// Role (`standard`).
        role: String,
        /// Base port (2222).
        base: u16,
        /// The port as given.
        port: u16,
    },
    /// A VM by name.
    Vm(String),
}

impl FaultSpec {
    /// Checks it against the lab and a run of `run_s` seconds: the target exists for its
    /// kind, and the fault ends within the run (so its end is recorded with the results), at
    /// least [`recovery::JUDGE_AFTER_S`] before the run's end (so its recovery can be judged).
    pub fn resolve(&self, topology: &Topology, run_s: f64) -> Result<Resolved, FaultError> {
        let err = |message: String| FaultError {
            spec: self.to_string(),
            message,
        };
        if self.start_s + self.duration_s > run_s {
            return Err(err(format!(
                "ends at {:.1} s, after the run's {run_s:.1} s: its end would not be in the \
                 results; start it earlier or shorten it",
                self.start_s + self.duration_s
            )));
        }
        if self.end_s() > run_s - recovery::JUDGE_AFTER_S {
            return Err(err(format!(
                "ends at {:.1} s, less than {} s before the run's end ({run_s:.1} s): judging \
                 its recovery needs at least that long after it (10 s to hold), so it could \
                 only be NOT RECOVERED; end it earlier or run longer",
                self.end_s(),
                recovery::JUDGE_AFTER_S
            )));
        }
        let vm_names: Vec<&str> = topology.vms.iter().map(|v| v.name.as_str()).collect();
        match self.kind {
            FaultKind::SshdKill | FaultKind::Netem => {
                let port: u16 = self
                    .target
                    .parse()
                    .map_err(|_| err(format!("`{}` is not a port of the target", self.target)))?;
                let found = topology
                    .target_ports()
                    .into_iter()
                    .find(|t| t.base == port || t.netem == port);
                match found {
                    Some(t) => Ok(Resolved::Sshd {
                        role: t.role.to_owned(),
                        base: t.base,
                        port,
                    }),
                    None => Err(err(format!(
                        "the target has no sshd on port {port} (its ports: {})",
                        topology
                            .target_ports()
                            .iter()
                            .map(|t| format!("{} / {}", t.base, t.netem))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))),
                }
            }
            FaultKind::Partition => {
                if vm_names.contains(&self.target.as_str()) {
                    Ok(Resolved::Vm(self.target.clone()))
                } else {
                    Err(err(format!(
                        "the lab has no VM `{}` (its VMs: {})",
                        self.target,
                        vm_names.join(", ")
                    )))
                }
            }
            FaultKind::McpPause | FaultKind::McpRestart => {
                if self.target == crate::topology::MCP_VM {
                    Ok(Resolved::Vm(self.target.clone()))
                } else {
                    Err(err(format!(
                        "{} acts on the MCP server only: {}@START+DURATION",
                        self.kind, self.kind
                    )))
                }
            }
        }
    }

    /// The checks `--fault`'s parser makes, for a spec read from a scenario's `[[fault]]`
    /// table: times finite and not negative, a duration, a target, and netem settings exactly
    /// for `netem` (in range, by the lab's profile rules).
    pub fn check(&self) -> Result<(), FaultError> {
        let err = |message: String| FaultError {
            spec: self.to_string(),
            message,
        };
        if !(self.start_s.is_finite() && self.start_s >= 0.0) {
            return Err(err(
                "start_s: seconds from the run's start, 0 or more".into()
            ));
        }
        if !(self.duration_s.is_finite() && self.duration_s > 0.0) {
            return Err(err("duration_s: seconds, more than 0".into()));
        }
        if self.target.is_empty() {
            return Err(err(format!("{} needs a target", self.kind)));
        }
        match (&self.netem, self.kind) {
            (Some(n), FaultKind::Netem) => n.check().map_err(err),
            (None, FaultKind::Netem) => Err(err("netem needs its settings (`netem`)".into())),
            (Some(_), kind) => Err(err(format!("{kind} takes no netem settings"))),
            (None, _) => Ok(()),
        }
    }

    /// Seconds from the run's start to its end.
    pub fn end_s(&self) -> f64 {
        self.start_s + self.duration_s
    }
}

/// Checks that no two faults of a run get in each other's way while both last, on the targets
/// they resolve to in `topology` (a port's netem twin is its sshd's; a spec that does not
/// resolve is refused by [`FaultSpec::resolve`]):
/// - two on one thing: one sshd (`sshd-kill:2222` and `sshd-kill:2322`), the MCP server
///   (`mcp-pause`, `mcp-restart`), or partitions (one VM off the bridge at a time);
/// - two `netem` faults, on any ports: each sets the lab's profiles and its own port, so the
///   second would undo the first and the first's end the second;
/// - an end that waits over a link another fault cuts: `sshd-kill`'s end waits for the port
///   (`partition:target`), `mcp-restart`'s for `/health` (`partition:mcp`);
/// - `netem` and `mcp-pause`: on qemu a netem fault may command the MCP guest, which the pause
///   freezes (refused on every backend: one rule for every lab).
pub fn check_overlaps(specs: &[FaultSpec], topology: &Topology) -> Result<(), FaultError> {
    let resolved: Vec<Option<Resolved>> = specs
        .iter()
        .map(|s| s.resolve(topology, f64::INFINITY).ok())
        .collect();
    for (i, a) in specs.iter().enumerate() {
        for (j, b) in specs.iter().enumerate().skip(i + 1) {
            if !(a.start_s < b.end_s() && b.start_s < a.end_s()) {
                continue;
            }
            if let Some(why) = conflict((a, resolved[i].as_ref()), (b, resolved[j].as_ref())) {
                return Err(FaultError {
                    spec: b.to_string(),
                    message: format!("overlaps `{a}`: {why}"),
                });
            }
        }
    }
    Ok(())
}

/// Why two faults cannot last at the same time, if they cannot.
fn conflict(
    (a, ra): (&FaultSpec, Option<&Resolved>),
    (b, rb): (&FaultSpec, Option<&Resolved>),
) -> Option<&'static str> {
    use FaultKind::{McpPause, McpRestart, Netem, Partition, SshdKill};
    let vm = |r: Option<&Resolved>, name: &str| matches!(r, Some(Resolved::Vm(v)) if v == name);
    let base = |r: Option<&Resolved>| match r {
        Some(Resolved::Sshd { base, .. }) => Some(*base),
        _ => None,
    };
    let either =
        |x: FaultKind, y: FaultKind| (a.kind == x && b.kind == y) || (a.kind == y && b.kind == x);
    // The partition's VM, where one of the two is a partition.
    let cut = if a.kind == Partition { ra } else { rb };
    if a.kind == SshdKill && b.kind == SshdKill && base(ra).is_some() && base(ra) == base(rb) {
        Some("both act on the same sshd")
    } else if is_mcp(a.kind) && is_mcp(b.kind) {
        Some("both act on the MCP server")
    } else if a.kind == Partition && b.kind == Partition {
        Some("one VM is cut off the bridge at a time")
    } else if a.kind == Netem && b.kind == Netem {
        Some(
            "netem faults take turns: each sets the lab's profiles and its own port, so one \
             would undo the other",
        )
    } else if either(Partition, SshdKill) && vm(cut, crate::topology::TARGET_VM) {
        Some("sshd-kill's end waits for the port over the bridge, which the partition cuts")
    } else if either(Partition, McpRestart) && vm(cut, crate::topology::MCP_VM) {
        Some("mcp-restart's end waits for /health over the bridge, which the partition cuts")
    } else if either(Netem, McpPause) {
        Some(
            "on qemu a netem fault also commands the MCP guest (profiles shaped both ways), \
             whose control port the pause freezes with its qemu",
        )
    } else {
        None
    }
}

fn is_mcp(k: FaultKind) -> bool {
    matches!(k, FaultKind::McpPause | FaultKind::McpRestart)
}

/// One fault as executed: `faults` in summary.json. Times are unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Its position in the run's list (the job API's key).
    pub index: usize,
    /// The spec, as planned.
    pub spec: FaultSpec,
    /// When it took effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<f64>,
    /// When it was reverted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<f64>,
    /// What went wrong executing or reverting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its judgement from the run's records (filled by the agent at the end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<recovery::FaultAnalysis>,
}

impl FaultRecord {
    /// The record of fault `index` of a run before anything of it happened.
    pub fn planned(index: usize, spec: FaultSpec) -> Self {
        Self {
            index,
            spec,
            started_at: None,
            ended_at: None,
            error: None,
            analysis: None,
        }
    }

    /// The label reports use: `sshd-kill:2222`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.spec.kind, self.spec.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        crate::Lab::builtin().expect("built-in lab").topology
    }

    #[test]
    fn specs_parse_and_print_back() {
        let s: FaultSpec = "sshd-kill:2222@20s+10s".parse().expect("ok");
        assert_eq!(
            (s.kind, s.target.as_str(), s.start_s, s.duration_s),
            (FaultKind::SshdKill, "2222", 20.0, 10.0)
        );
        assert_eq!(s.to_string(), "sshd-kill:2222@20s+10s");
        let p: FaultSpec = "mcp-pause@1.5s+500ms".parse().expect("ok");
        assert_eq!(
            (p.target.as_str(), p.start_s, p.duration_s),
            ("mcp", 1.5, 0.5)
        );
        let n: FaultSpec = "netem:2322:delay=200ms,loss=5%@1m+10s".parse().expect("ok");
        assert_eq!(n.start_s, 60.0);
        assert_eq!(
            n.netem,
            Some(NetemChange {
                delay_ms: 200,
                jitter_ms: 0,
                loss_percent: 5.0,
                ..NetemChange::default()
            })
        );
        assert_eq!(n.to_string(), "netem:2322:delay=200ms,loss=5%@60s+10s");
        let all = "netem:2322:delay=100ms,jitter=20ms,rate=1000kbit,distribution=pareto,\
                   reorder=25%,corrupt=0.1%@1s+2s";
        let n: FaultSpec = all.parse().expect("every setting");
        assert_eq!(n.to_string(), all);
        let n = n.netem.expect("netem");
        assert_eq!(
            (n.rate_kbit, n.distribution, n.reorder_percent),
            (
                Some(1000),
                Some(crate::netem::Distribution::Pareto),
                Some(25.0)
            )
        );
        let part: FaultSpec = "partition:target@5s+10s".parse().expect("ok");
        assert_eq!(
            part.resolve(&topo(), 60.0),
            Ok(Resolved::Vm("target".into()))
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (spec, says) in [
            ("sshd-kill:2222", "KIND:TARGET@START+DURATION"),
            ("sshd-kill:2222@20s", "START+DURATION"),
            ("sshd-kill:2222@x+1s", "start"),
            ("sshd-kill:2222@1s+0s", "duration"),
            ("explode:2222@1s+1s", "unknown kind `explode`"),
            ("sshd-kill@1s+1s", "needs a target"),
            ("netem:2322@1s+1s", "netem:PORT:"),
            ("netem:2322:delay=fast@1s+1s", "delay `fast`"),
            ("netem:2322:speed=1@1s+1s", "unknown netem setting `speed`"),
            ("netem:2322:distribution=normal@1s+1s", "give jitter_ms"),
            ("netem:2322:jitter=20ms@1s+1s", "exceeds delay_ms"),
            (
                "netem:2322:distribution=gamma,jitter=1ms@1s+1s",
                "normal or pareto",
            ),
            ("netem:2322:reorder=5%@1s+1s", "give delay_ms"),
            ("netem:2322:rate=fast@1s+1s", "rate `fast`"),
            (
                "netem:2322:duplicate=1%@1s+1s",
                "cannot mix duplicating netems",
            ),
        ] {
            let e = spec.parse::<FaultSpec>().expect_err(spec).to_string();
            assert!(e.contains(says), "{spec}: {e}");
        }
    }

    #[test]
    fn targets_the_lab_does_not_have_are_refused() {
        let t = topo();
        let resolve = |s: &str| s.parse::<FaultSpec>().expect(s).resolve(&t, 60.0);
        assert_eq!(
            resolve("sshd-kill:2322@1s+1s"),
            Ok(Resolved::Sshd {
                role: "standard".into(),
                base: 2222,
                port: 2322
            })
        );
        let e = resolve("sshd-kill:9999@1s+1s").expect_err("no such port");
        assert!(e.message.contains("no sshd on port 9999"), "{e}");
        let e = resolve("partition:db@1s+1s").expect_err("no such VM");
        assert!(e.message.contains("no VM `db`"), "{e}");
        let e = resolve("mcp-pause:target@1s+1s").expect_err("mcp only");
        assert!(e.message.contains("MCP server only"), "{e}");
        let e = resolve("sshd-kill:2222@55s+10s").expect_err("past the run");
        assert!(e.message.contains("after the run's 60.0 s"), "{e}");
        let e = resolve("sshd-kill:2222@50s+6s").expect_err("too near the run's end");
        assert!(
            e.message.contains("less than 5 s before the run's end"),
            "{e}"
        );
        assert!(resolve("sshd-kill:2222@50s+5s").is_ok());
    }

    #[test]
    fn faults_that_would_undo_or_block_each_other_are_refused() {
        let t = topo();
        let check = |specs: &[&str]| {
            let specs: Vec<FaultSpec> = specs.iter().map(|s| s.parse().expect(s)).collect();
            check_overlaps(&specs, &t)
        };
        for (pair, says) in [
            (
                ["sshd-kill:2222@1s+5s", "sshd-kill:2222@3s+5s"],
                "the same sshd",
            ),
            // 2322 is 2222's netem twin: the same sshd.
            (
                ["sshd-kill:2222@1s+5s", "sshd-kill:2322@3s+5s"],
                "the same sshd",
            ),
            (["mcp-pause@1s+5s", "mcp-restart@2s+1s"], "the MCP server"),
            (
                ["partition:agent@1s+5s", "partition:target@2s+1s"],
                "one VM",
            ),
            (
                ["netem:2322:delay=1ms@1s+5s", "netem:2323:loss=5%@2s+5s"],
                "netem faults take turns",
            ),
            (
                ["partition:target@1s+5s", "sshd-kill:2222@2s+1s"],
                "waits for the port",
            ),
            (
                ["sshd-kill:2222@2s+5s", "partition:target@1s+2s"],
                "waits for the port",
            ),
            (
                ["mcp-restart@1s+5s", "partition:mcp@2s+5s"],
                "waits for /health",
            ),
        ] {
            let e = check(&pair).expect_err(&format!("{pair:?}"));
            assert!(e.message.contains(says), "{pair:?}: {e}");
        }
        for apart in [
            &[
                "sshd-kill:2222@1s+5s",
                "sshd-kill:2222@6s+5s",
                "mcp-pause@2s+1s",
            ][..],
            // Other sshds, other VMs: no conflict.
            &["sshd-kill:2222@1s+5s", "sshd-kill:2223@2s+5s"],
            &["partition:agent@1s+5s", "sshd-kill:2222@2s+5s"],
            &["partition:target@1s+5s", "mcp-restart@2s+5s"],
            &["partition:mcp@1s+5s", "mcp-pause@2s+1s"],
            &["netem:2322:delay=1ms@1s+5s", "sshd-kill:2222@2s+5s"],
        ] {
            assert_eq!(check(apart), Ok(()), "{apart:?}");
        }
    }
}
