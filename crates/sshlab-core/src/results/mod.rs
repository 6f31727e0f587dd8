//! Results: the per-operation [`Record`] stream (`w<N>.jsonl`), the [`Aggregate`] that folds
//! it into histograms, the versioned [`Summary`] (`summary.json`) that reports render, and the
//! agent's own Prometheus metrics named in [`live_metrics`].
//!
//! The load agent produces records and the reports consume them; they share nothing else,
//! so a report can be rebuilt from saved files on another machine or day.

pub mod aggregate;
pub mod capacity;
pub mod compare;
pub mod live_metrics;
pub mod messages;
pub mod record;
pub mod server_metrics;
pub mod stats;
pub mod summary;
pub mod verdict;

pub use aggregate::{Aggregate, Group, IntervalStats};
pub use messages::{ErrorMessage, ErrorMessages};
pub use record::{Record, Status};
pub use stats::LatencyStats;
pub use summary::{
    GroupSummary, Observed, PhaseServer, RunInfo, SCHEMA_VERSION, ServerReport, Summary,
    ThresholdResult, Totals,
};
pub use verdict::Verdict;
