//! Shared library of the sshlab lab.
//!
//! It owns what the host tool and the load agent must agree on. Implemented so far: the lab's
//! configuration, i.e. its topology ([`topology`], from `vms/topology.toml`) and its netem
//! profiles ([`netem`], from `netem/profiles.toml`), loaded together by [`Lab::load`]. Those two
//! files are the one source of truth for names, addresses, ports and delays: Nix reads the very
//! same files with `builtins.fromTOML`, so nothing is written twice. The result schema
//! ([`results`]: records, histograms merged by adding, the versioned summary) is shared by the
//! agent that measures and the reports that read it. The scenario language and the built-in
//! scenarios ([`scenario`], from `crates/sshlab-core/scenarios/`) are run by the agent and
//! consulted by the host tool (the `full` suite, which scenarios cover the netem ports). Where the
//! live dashboard listens ([`dashboard`]) is agreed here by the agent that serves it and the
//! host tool that forwards it.
#![deny(missing_docs)]

pub mod dashboard;
pub mod error;
pub mod faults;
pub mod guest_kernel;
pub mod job;
pub mod lab;
pub mod netem;
pub mod report;
pub mod results;
pub mod scenario;
pub mod topology;

pub use error::Error;
pub use lab::Lab;
pub use netem::{NetemProfile, NetemProfiles};
pub use topology::{Bridge, Ipv4Cidr, MacAddr, Protocol, Service, TargetPort, Topology, Vm};
