//! Scenarios are data: TOML files describing which MCP tool calls to make, with what
//! arguments, how often, by how many workers, for how long. The built-ins (the load-testing
//! guide's five, plus `quick`) are the TOML files in `crates/sshlab-core/scenarios/`, embedded
//! and parsed exactly like a user's `--scenario-file`, so a user can copy one and change it,
//! and nothing in here knows the tools of any particular server.
//!
//! The scenario language and the built-in catalog live here, in sshlab-core, because both
//! sides read them: the load agent runs scenarios, and the host tool takes from here what it
//! needs to know about them (the built-in names, the [`FULL`] suite's order, and, from the
//! parsed built-in, whether a scenario covers the netem ports:
//! [`Scenario::covers_netem_ports`]).
//!
//! Sessions are handled generically: an op that `provides = "session"` keeps a field of its
//! structured result (default `session_id`) as a handle; ops that `needs` one get it as
//! `{{session}}`; an op that `consumes` one gives it up. See [`template`] for placeholders.

pub mod segment;
pub mod template;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

/// A scenario could not be loaded or is inconsistent.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Unknown built-in name.
    #[error("unknown scenario `{0}` (built-in: {names})", names = builtin_names().collect::<Vec<_>>().join(", "))]
    Unknown(String),
    /// The file could not be read.
    #[error("cannot read scenario file {path}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for a scenario.
    #[error("{source_name}: {message}")]
    Parse {
        /// File or built-in name.
        source_name: String,
        /// The parser's message (line, column, key).
        message: String,
    },
    /// Parsed, but inconsistent.
    #[error("{source_name}: {key}: {message}")]
    Invalid {
        /// File or built-in name.
        source_name: String,
        /// The offending key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// How a worker picks its next op.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// At random, by weight.
    #[default]
    Weighted,
    /// In file order, round and round.
    Cycle,
}

/// Which target ports the phases cover.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Ports {
    /// [`BASELINE_NETEM`]: the baseline port, then every netem port of the lab's profiles (the
    /// only name [`Scenario::parse`] accepts).
    Named(String),
    /// Explicit list.
    List(Vec<u16>),
}

/// The one named [`Ports`] mode: the baseline port, then every netem port.
pub const BASELINE_NETEM: &str = "baseline+netem";

/// One phase override.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseSpec {
    /// Workers in this phase.
    pub workers: Option<usize>,
    /// Seconds.
    pub duration_s: Option<u64>,
    /// Open-model arrivals per second.
    pub rate: Option<f64>,
    /// Target port.
    pub port: Option<u16>,
}

/// A scenario that is a capacity search (`[capacity]`): its steps' settings. The first step's
/// rate is the scenario's `rate`; each step lasts `duration_s`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacitySpec {
    /// The SLO, in threshold syntax (`p99<200ms`, `errors<1%`); a step passes when all hold.
    pub slo: Vec<String>,
    /// The most steps (default 10).
    pub max_steps: Option<usize>,
    /// Done once the highest pass and the lowest fail are within this, percent (default 5).
    pub precision_percent: Option<f64>,
    /// The start of each step that is not judged, seconds (default 2, at most half a step).
    pub warmup_s: Option<f64>,
}

/// A ramp stage of the open model (k6-style: reach `target` arrivals/s over `duration_s`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// Seconds.
    pub duration_s: f64,
    /// Arrivals per second at the end of the stage.
    pub target: f64,
}

/// One kind of call.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpSpec {
    /// Report label (default: the tool name).
    pub name: Option<String>,
    /// MCP tool to call.
    pub tool: String,
    /// Relative frequency in weighted mode (0 = only run when another op needs what it provides).
    #[serde(default = "one")]
    pub weight: u32,
    /// Arguments; string values may hold placeholders.
    #[serde(default)]
    pub args: toml::Table,
    /// Keeps a handle from the result: the handle's name (e.g. `session`).
    pub provides: Option<String>,
    /// Field of `structuredContent` holding the handle (default `session_id`).
    pub provides_field: Option<String>,
    /// Needs a handle (given as `{{session}}`).
    pub needs: Option<String>,
    /// Uses a handle and gives it up.
    pub consumes: Option<String>,
}

fn one() -> u32 {
    1
}

/// Tool errors in a row on one handle after which a worker gives it up, whatever their kind
/// (a rate-limited or timed-out call is no tool error and never counts).
pub const STALE_AFTER: u32 = 3;

/// A scenario file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name.
    pub name: String,
    /// One line on what it measures.
    #[serde(default)]
    pub description: String,
    /// Seconds per phase.
    pub duration_s: u64,
    /// Workers (unless a phase says otherwise).
    #[serde(default = "one_usize")]
    pub workers: usize,
    /// Pause after each op, closed model.
    #[serde(default)]
    pub think_ms: u64,
    /// Open model: arrivals per second (constant).
    pub rate: Option<f64>,
    /// Open model: ramping stages instead of a constant rate.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// Connections opened and closed before measuring, to warm the server's pool.
    #[serde(default)]
    pub prewarm: usize,
    /// Most handles a worker holds; a provider op beyond it first consumes the oldest.
    #[serde(default = "one_usize")]
    pub max_sessions: usize,
    /// How ops are picked.
    #[serde(default)]
    pub mode: Mode,
    /// Ports to cover, one phase each.
    pub ports: Option<Ports>,
    /// Phases (default: one).
    #[serde(default, rename = "phase")]
    pub phases: Vec<PhaseSpec>,
    /// Lists for `{{pick NAME}}`.
    #[serde(default)]
    pub vars: BTreeMap<String, Vec<String>>,
    /// Error kind → text that marks it in a tool error.
    #[serde(default)]
    pub error_kinds: BTreeMap<String, String>,
    /// Error kinds (of `error_kinds`) that mean a handle is no use any more (its session is
    /// gone, or its connection lost): a worker gives the handle up at the first such error
    /// instead of after [`STALE_AFTER`] tool errors in a row. Giving up runs the op that
    /// `consumes` the handle, unmeasured, so the server releases what it still holds.
    #[serde(default)]
    pub stale_kinds: Vec<String>,
    /// Thresholds checked by default.
    #[serde(default)]
    pub thresholds: Vec<String>,
    /// Closed model: each worker takes this many turns and stops (the duration still bounds
    /// the run). A turn is one op; one that must first open or give up a handle makes two
    /// calls.
    pub iterations: Option<u64>,
    /// Answers to a server's input requests (a 2026-07-28 `input_required` result), by the
    /// request's method, each sent as that request's result, e.g.
    /// `[input_responses."elicitation/create"]` with `action = "accept"` and a `content` table.
    #[serde(default)]
    pub input_responses: BTreeMap<String, toml::Value>,
    /// A capacity search instead of fixed phases.
    pub capacity: Option<CapacitySpec>,
    /// Faults the host executes during the run (`sshlab run`; a standalone `sshlab-agent run`
    /// cannot execute them and says so): `[[fault]]` tables with `kind`, `target`, `start_s`,
    /// `duration_s` (and `netem` settings), as `--fault KIND:TARGET@START+DURATION` writes them.
    #[serde(default, rename = "fault")]
    pub faults: Vec<crate::faults::FaultSpec>,
    /// The calls.
    #[serde(rename = "op")]
    pub ops: Vec<OpSpec>,
}

fn one_usize() -> usize {
    1
}

const BUILTIN: &[(&str, &str)] = &[
    (
        "connection_rate",
        include_str!("../../scenarios/connection_rate.toml"),
    ),
    (
        "command_throughput",
        include_str!("../../scenarios/command_throughput.toml"),
    ),
    (
        "sustained_load",
        include_str!("../../scenarios/sustained_load.toml"),
    ),
    (
        "latency_test",
        include_str!("../../scenarios/latency_test.toml"),
    ),
    (
        "exhaustion_test",
        include_str!("../../scenarios/exhaustion_test.toml"),
    ),
    ("quick", include_str!("../../scenarios/quick.toml")),
    ("capacity", include_str!("../../scenarios/capacity.toml")),
];

/// The guide's full suite, in order.
pub const FULL: &[&str] = &[
    "connection_rate",
    "command_throughput",
    "sustained_load",
    "latency_test",
    "exhaustion_test",
];

/// Names of the built-in scenarios.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTIN.iter().map(|(n, _)| *n)
}

impl Scenario {
    /// A built-in scenario by name.
    pub fn builtin(name: &str) -> Result<Self, ScenarioError> {
        let (_, text) = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| ScenarioError::Unknown(name.to_owned()))?;
        Self::parse(text, &format!("built-in scenario {name}"))
    }

    /// A scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and validate TOML text.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            source_name: source_name.to_owned(),
            message: e.to_string(),
        })?;
        s.validate(source_name)?;
        Ok(s)
    }

    fn validate(&self, src: &str) -> Result<(), ScenarioError> {
        let invalid = |key: String, message: String| ScenarioError::Invalid {
            source_name: src.to_owned(),
            key,
            message,
        };
        if self.ops.is_empty() {
            return Err(invalid(
                "op".into(),
                "at least one [[op]] is required".into(),
            ));
        }
        if self.duration_s == 0 {
            return Err(invalid("duration_s".into(), "must be at least 1".into()));
        }
        if self.workers == 0 || self.phases.iter().any(|p| p.workers == Some(0)) {
            return Err(invalid("workers".into(), "must be at least 1".into()));
        }
        if self.iterations == Some(0) {
            return Err(invalid("iterations".into(), "must be at least 1".into()));
        }
        if self.iterations.is_some() && self.is_open() {
            return Err(invalid(
                "iterations".into(),
                "counts a closed-model worker's calls; an open-model run is paced by its rate"
                    .into(),
            ));
        }
        if self.max_sessions == 0 {
            return Err(invalid("max_sessions".into(), "must be at least 1".into()));
        }
        let rates = self
            .rate
            .iter()
            .chain(self.phases.iter().filter_map(|p| p.rate.as_ref()));
        for r in rates {
            if !(r.is_finite() && *r > 0.0) {
                return Err(invalid(
                    "rate".into(),
                    format!("{r} is not a positive number"),
                ));
            }
        }
        for (i, st) in self.stages.iter().enumerate() {
            if !(st.duration_s.is_finite()
                && st.duration_s > 0.0
                && st.target.is_finite()
                && st.target >= 0.0)
            {
                return Err(invalid(
                    format!("stages[{i}]"),
                    "needs duration_s > 0 and target >= 0".into(),
                ));
            }
        }
        // A `[[fault]]` table gets the checks `--fault` gets (times finite, not negative, a
        // duration; netem settings in range, by the lab's profile rules).
        for (i, f) in self.faults.iter().enumerate() {
            f.check()
                .map_err(|e| invalid(format!("fault[{i}]"), e.message))?;
        }
        if let Some(Ports::Named(n)) = &self.ports
            && n != BASELINE_NETEM
        {
            return Err(invalid(
                "ports".into(),
                format!("`{n}`: use \"{BASELINE_NETEM}\" or a list of ports"),
            ));
        }
        if self.mode == Mode::Weighted && self.ops.iter().all(|o| o.weight == 0) {
            return Err(invalid(
                "op".into(),
                "in weighted mode at least one op needs weight > 0".into(),
            ));
        }
        for (i, op) in self.ops.iter().enumerate() {
            if let Some(h) = &op.provides
                && !self.ops.iter().any(|o| o.consumes.as_ref() == Some(h))
            {
                return Err(invalid(
                    format!("op[{i}].provides"),
                    format!(
                        "no op consumes `{h}`: the server would keep every one a worker opens; \
                         add the op that releases it with `consumes = \"{h}\"` (weight = 0 \
                         runs it only to give handles back)"
                    ),
                ));
            }
        }
        if let Some(c) = &self.capacity {
            if c.slo.is_empty() {
                return Err(invalid(
                    "capacity.slo".into(),
                    "a capacity search needs at least one SLO bound, e.g. \"p99<200ms\"".into(),
                ));
            }
            if self.rate.is_none() {
                return Err(invalid(
                    "rate".into(),
                    "a capacity search starts at the scenario's rate: give `rate`".into(),
                ));
            }
        }
        for kind in &self.stale_kinds {
            if !self.error_kinds.contains_key(kind) {
                return Err(invalid(
                    "stale_kinds".into(),
                    format!("`{kind}` is not one of error_kinds"),
                ));
            }
        }
        for (i, op) in self.ops.iter().enumerate() {
            for need in op.needs.iter().chain(op.consumes.iter()) {
                if !self.ops.iter().any(|o| o.provides.as_deref() == Some(need)) {
                    return Err(invalid(
                        format!("op[{i}].needs"),
                        format!("no op provides `{need}`"),
                    ));
                }
            }
            template::check(&op.args, &self.vars)
                .map_err(|m| invalid(format!("op[{i}].args"), m))?;
        }
        Ok(())
    }

    /// Whether its ports are [`BASELINE_NETEM`]: one phase on the baseline port, then one per
    /// netem port of the lab (the host decides which of those are worth measuring).
    pub fn covers_netem_ports(&self) -> bool {
        matches!(&self.ports, Some(Ports::Named(n)) if n == BASELINE_NETEM)
    }

    /// Whether this scenario uses the open model.
    pub fn is_open(&self) -> bool {
        self.rate.is_some()
            || !self.stages.is_empty()
            || self.phases.iter().any(|p| p.rate.is_some())
    }

    /// The scripted input responses as JSON, by method.
    pub fn input_responses_json(&self) -> BTreeMap<String, serde_json::Value> {
        self.input_responses
            .iter()
            .filter_map(|(m, v)| serde_json::to_value(v).ok().map(|v| (m.clone(), v)))
            .collect()
    }

    /// The error kind of a tool error text, by the scenario's `error_kinds`.
    pub fn classify_tool_error(&self, text: &str) -> String {
        self.error_kinds
            .iter()
            .find(|(_, needle)| text.contains(needle.as_str()))
            .map_or_else(|| "tool_error".to_owned(), |(k, _)| k.clone())
    }

    /// Whether a tool error of `kind` makes the handle it used stale at once.
    pub fn is_stale_kind(&self, kind: &str) -> bool {
        self.stale_kinds.iter().any(|k| k == kind)
    }

    /// The op's report label.
    pub fn label(op: &OpSpec) -> &str {
        op.name.as_deref().unwrap_or(&op.tool)
    }
}

/// Arguments rendered for one call.
pub fn render_args(op: &OpSpec, ctx: &template::Context<'_>) -> Value {
    template::render(&op.args, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_with_the_guides_defaults() {
        let names: Vec<_> = builtin_names().collect();
        assert_eq!(names.len(), 7);
        for n in &names {
            Scenario::builtin(n).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        let cr = Scenario::builtin("connection_rate").expect("ok");
        assert_eq!(
            cr.phases
                .iter()
                .map(|p| p.workers.unwrap_or(0))
                .collect::<Vec<_>>(),
            [1, 2, 5, 10]
        );
        assert_eq!(cr.duration_s, 60);
        let ct = Scenario::builtin("command_throughput").expect("ok");
        assert_eq!((ct.duration_s, ct.workers, ct.prewarm), (120, 10, 5));
        assert_eq!(
            ct.vars["commands"],
            ["hostname", "whoami", "cat /etc/hostname"]
        );
        let sl = Scenario::builtin("sustained_load").expect("ok");
        assert_eq!((sl.duration_s, sl.workers, sl.rate), (600, 5, Some(40.0)));
        let weights: Vec<u32> = sl.ops.iter().map(|o| o.weight).collect();
        assert_eq!(weights, [70, 20, 10]);
        let lt = Scenario::builtin("latency_test").expect("ok");
        assert_eq!((lt.duration_s, lt.workers, lt.rate), (60, 3, Some(10.0)));
        assert!(lt.is_open());
        let ex = Scenario::builtin("exhaustion_test").expect("ok");
        let phases: Vec<_> = ex.phases.iter().map(|p| p.workers).collect();
        assert_eq!((ex.duration_s, phases), (60, vec![Some(25), Some(10)]));
        // Every built-in gives up a handle whose session is gone or whose connection is lost.
        for n in &names {
            let s = Scenario::builtin(n).expect("ok");
            assert!(
                s.is_stale_kind("session_gone") && s.is_stale_kind("connection_lost"),
                "{n}"
            );
            assert_eq!(
                s.classify_tool_error("session not found: ssh_x"),
                "session_gone"
            );
            assert_eq!(
                s.classify_tool_error(
                    "session ssh_x ended: connection to 10.178.0.20:2222 lost: it closed"
                ),
                "connection_lost"
            );
        }
        let cr = Scenario::builtin("connection_rate").expect("ok");
        assert_eq!(
            cr.ops[0].args.get("reuse"),
            Some(&toml::Value::Boolean(false)),
            "connection_rate makes a new SSH connection every time"
        );
        let q = Scenario::builtin("quick").expect("ok");
        assert_eq!((q.duration_s, q.workers), (30, 3));
        assert!(matches!(
            Scenario::builtin("nope"),
            Err(ScenarioError::Unknown(_))
        ));
    }

    #[test]
    fn only_the_baseline_netem_mode_covers_the_netem_ports() {
        let covering: Vec<_> = builtin_names()
            .filter(|n| Scenario::builtin(n).expect("ok").covers_netem_ports())
            .collect();
        assert_eq!(covering, ["latency_test"]);
        let base = "name='x'\nduration_s=1\n[[op]]\ntool='t'\n";
        let listed = Scenario::parse(&format!("ports=[2222, 2322]\n{base}"), "f").expect("ok");
        assert!(!listed.covers_netem_ports());
        let named = Scenario::parse(&format!("ports='baseline+netem'\n{base}"), "f").expect("ok");
        assert!(named.covers_netem_ports());
        assert!(Scenario::parse(&format!("ports='netem'\n{base}"), "f").is_err());
    }

    #[test]
    fn the_full_suite_is_the_guides_five_built_ins_in_order() {
        assert_eq!(
            FULL,
            [
                "connection_rate",
                "command_throughput",
                "sustained_load",
                "latency_test",
                "exhaustion_test",
            ]
        );
        for n in FULL {
            let s = Scenario::builtin(n).unwrap_or_else(|e| panic!("{n}: {e}"));
            assert_eq!(s.name, *n);
        }
    }

    #[test]
    fn inconsistent_files_name_the_key() {
        let base = "name='x'\nduration_s=1\n";
        let cases = [
            (base.to_string(), "op"),
            (
                format!("{base}[[op]]\ntool='t'\nneeds='session'\n"),
                "op[0].needs",
            ),
            (format!("{base}rate=-1.0\n[[op]]\ntool='t'\n"), "rate"),
            (
                format!("{base}[[op]]\ntool='t'\nargs={{a='{{{{pick nope}}}}'}}\n"),
                "op[0].args",
            ),
            (format!("{base}[[op]]\ntool='t'\nweight=0\n"), "op"),
            (format!("{base}bogus=1\n[[op]]\ntool='t'\n"), "bogus"),
            (
                format!("{base}stale_kinds=['gone']\n[[op]]\ntool='t'\n"),
                "stale_kinds",
            ),
            (
                format!("{base}[[op]]\ntool='t'\nprovides='session'\n"),
                "op[0].provides",
            ),
            (
                format!(
                    "{base}[[op]]\ntool='t'\n[[fault]]\nkind='sshd-kill'\ntarget='2222'\n\
                     start_s=-1.0\nduration_s=5.0\n"
                ),
                "fault[0]",
            ),
            (
                format!(
                    "{base}[[op]]\ntool='t'\n[[fault]]\nkind='mcp-pause'\ntarget='mcp'\n\
                     start_s=nan\nduration_s=5.0\n"
                ),
                "fault[0]",
            ),
            (
                format!(
                    "{base}[[op]]\ntool='t'\n[[fault]]\nkind='netem'\ntarget='2322'\n\
                     start_s=1.0\nduration_s=5.0\nnetem={{delay_ms=100,loss_percent=-5.0}}\n"
                ),
                "fault[0]",
            ),
        ];
        for (text, key) in cases {
            let err = Scenario::parse(&text, "f.toml")
                .expect_err(&text)
                .to_string();
            assert!(
                err.starts_with("f.toml: ") && err.contains(key),
                "{text}\n→ {err}"
            );
        }
    }

    #[test]
    fn tool_errors_are_classified_by_the_scenarios_texts() {
        let s = Scenario::builtin("exhaustion_test").expect("ok");
        assert_eq!(
            s.classify_tool_error("pool exhausted for a@b:1 (10/10)"),
            "pool_exhausted"
        );
        assert_eq!(s.classify_tool_error("something else"), "tool_error");
    }
}
