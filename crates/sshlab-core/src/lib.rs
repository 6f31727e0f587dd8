//! Shared library of the sshlab lab.
//!
//! It will own what the host tool and the load agent must agree on: the lab's topology and
//! netem profiles (read from `vms/topology.toml` and `netem/profiles.toml`), the job and result
//! schema, histogram merging and report rendering. Skeleton: nothing is implemented yet; see
//! the open issues for the agent and the host tool.
#![deny(missing_docs)]
