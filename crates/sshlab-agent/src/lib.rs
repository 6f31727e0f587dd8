//! `sshlab-agent`: the load agent of the sshlab lab, and a standalone load tester for any MCP
//! Streamable-HTTP server.
//!
//! The pipeline runs one way, as in oha and vegeta: [`scenario`] (data: which tool calls, how
//! often; the language and the built-ins live in sshlab-core, shared with the host tool) →
//! [`engine`] (workers, closed or open model, one [`mcp`] client each) → a channel of
//! records → [`collector`] (`w<N>.jsonl`, the HDR aggregate, the `.hlog`, progress) → [`run`]
//! (summary, [`thresholds`], [`scrape`]d server metrics, reports via [`results`]). [`cli`] and
//! [`serve`] are the two ways in: the command line, and the Agent VM's control API; either can
//! serve a live [`dashboard`] of the run (drawn from the collector's live state by the report's
//! own code) with the agent's Prometheus metrics. [`secrets`] keeps what a run sends out of
//! everything it writes and serves. Across
//! runs: [`merge`] combines the results of a test split across agents (or any runs), and
//! `compare` (in sshlab-core) sets a candidate against a baseline.
#![deny(missing_docs)]

pub mod cli;
pub mod collector;
pub mod dashboard;
pub mod engine;
pub mod k8s;
pub mod mcp;
pub mod merge;
pub mod open_files;
pub mod results;
pub mod run;
pub mod scrape;
pub mod secrets;
pub mod serve;
pub mod thresholds;

pub use sshlab_core::scenario;
