//! Netem profiles: which target port gets which delay, jitter and loss.
//!
//! This module owns the schema of `netem/profiles.toml`, the one source of truth for the lab's
//! degraded-network settings: `sshlab netem apply` turns it into tc netem qdiscs on the
//! target's TAP egress, and the Nix side reads the same file with `builtins.fromTOML`. Because
//! only that one direction is shaped, a profile's delay is added once per round trip.
//!
//! [`NetemProfiles::validate`] checks the file on its own (ranges, duplicates);
//! [`crate::Lab::load`] also checks it against the topology (each `base` is an sshd port of
//! the target and `port == base + netem_port_offset`).

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{self, Error};

/// The whole of `netem/profiles.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetemProfiles {
    /// The profiles, in file order (`[[profile]]`).
    #[serde(rename = "profile", default)]
    pub profiles: Vec<NetemProfile>,
}

/// The shape of netem's random delay around `delay_ms`, `jitter_ms` wide: netem's own
/// uniform one when absent, or one of iproute2's tables (`tc ... distribution normal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Normal, with `jitter_ms` as its standard deviation.
    Normal,
    /// Pareto (a = 3): mostly short, with a long tail of large delays.
    Pareto,
}

impl Distribution {
    /// Its name in profiles.toml and in `tc`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Pareto => "pareto",
        }
    }
}

impl std::str::FromStr for Distribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "normal" => Ok(Self::Normal),
            "pareto" => Ok(Self::Pareto),
            _ => Err(format!("distribution `{s}`: normal or pareto")),
        }
    }
}

/// The shaping of one netem'd port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetemProfile {
    /// The target's clean sshd port, e.g. 2222.
    pub base: u16,
    /// The shaped port, `base + netem_port_offset`, e.g. 2322.
    pub port: u16,
    /// Added delay, milliseconds (once per round trip).
    pub delay_ms: u32,
    /// Random variation of the delay, milliseconds; at most `delay_ms`.
    pub jitter_ms: u32,
    /// Packet loss, percent, 0 to 100.
    pub loss_percent: f64,
    /// Netem's correlation for delay and loss, percent, 0 to 100; absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_percent: Option<f64>,
    /// Bandwidth limit, kbit/s; absent means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_kbit: Option<u64>,
    /// The delay's distribution (needs `jitter_ms`); absent means netem's uniform one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
    /// Packets sent at once instead of delayed, percent (needs `delay_ms`): they overtake the
    /// ones before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder_percent: Option<f64>,
    /// Packets sent twice, percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_percent: Option<f64>,
    /// Packets with one random bit flipped, percent (the receiver's checksum drops most).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt_percent: Option<f64>,
    /// The seed of netem's random choices, for runs that repeat exactly (kernels with
    /// `TCA_NETEM_PRNG_SEED`, Linux 6.6 and later; refused on older ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Shape the target's replies from `port` too, with the same settings: every setting then
    /// applies in both directions (the delay twice per round trip, the loss to each packet
    /// either way, the rate to what the target sends as well). Absent: only the packets
    /// towards the target are shaped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub both_ways: bool,
    /// One line for humans, e.g. `severe: 200ms + 10% loss`.
    #[serde(default)]
    pub description: String,
}

impl NetemProfiles {
    /// Reads, parses and validates the file at `path`; errors name `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        Self::from_toml_str(&error::read(path)?, &path.display().to_string())
    }

    /// Parses and validates `text`; errors name `source_name` as the file.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Self, Error> {
        let profiles: Self = error::parse(text, source_name)?;
        profiles.validate(source_name)?;
        Ok(profiles)
    }

    /// Checks ranges and duplicates; errors name `file` and the offending key.
    pub fn validate(&self, file: &str) -> Result<(), Error> {
        let mut bases = HashSet::new();
        let mut ports = HashSet::new();
        for (i, p) in self.profiles.iter().enumerate() {
            let bad = |field: &str, message: String| {
                Err(Error::invalid(
                    file,
                    format!("profile[{i}].{field}"),
                    message,
                ))
            };
            if p.base == 0 {
                return bad("base", "must not be 0".into());
            }
            if !bases.insert(p.base) {
                return bad("base", format!("{} already has a profile", p.base));
            }
            if p.port == p.base {
                return bad("port", format!("{} is the base port itself", p.port));
            }
            if ports.contains(&p.base) {
                return bad("base", format!("{} is the port of another profile", p.base));
            }
            if bases.contains(&p.port) {
                return bad("port", format!("{} is the base of another profile", p.port));
            }
            if !ports.insert(p.port) {
                return bad("port", format!("{} already has a profile", p.port));
            }
            if p.jitter_ms > p.delay_ms {
                return bad(
                    "jitter_ms",
                    format!("{} ms exceeds delay_ms ({} ms)", p.jitter_ms, p.delay_ms),
                );
            }
            check_percent(p.loss_percent).or_else(|m| bad("loss_percent", m))?;
            if let Some(c) = p.correlation_percent {
                check_percent(c).or_else(|m| bad("correlation_percent", m))?;
            }
            for (field, value) in [
                ("reorder_percent", p.reorder_percent),
                ("duplicate_percent", p.duplicate_percent),
                ("corrupt_percent", p.corrupt_percent),
            ] {
                if let Some(v) = value {
                    check_percent(v).or_else(|m| bad(field, m))?;
                }
            }
            if p.distribution.is_some() && p.jitter_ms == 0 {
                return bad(
                    "distribution",
                    "shapes the jitter: give jitter_ms (its width) too".into(),
                );
            }
            if p.reorder_percent.is_some_and(|r| r > 0.0) && p.delay_ms == 0 {
                return bad(
                    "reorder_percent",
                    "reorders by sending some packets without the delay: give delay_ms too".into(),
                );
            }
            if p.duplicate_percent.is_some_and(|d| d > 0.0) && self.profiles.len() > 1 {
                return bad("duplicate_percent", DUPLICATE_ALONE.into());
            }
            if p.rate_kbit.is_some_and(|r| r > MAX_RATE_KBIT) {
                return bad(
                    "rate_kbit",
                    format!("at most {MAX_RATE_KBIT} (netem's rate is 32-bit bytes/s)"),
                );
            }
            if p.rate_kbit == Some(0) {
                return bad(
                    "rate_kbit",
                    "must be at least 1 (omit it for no limit)".into(),
                );
            }
        }
        Ok(())
    }

    /// The profile whose shaped `port` is `port` (not its base), if any.
    pub fn for_port(&self, port: u16) -> Option<&NetemProfile> {
        self.profiles.iter().find(|p| p.port == port)
    }
}

/// The highest rate netem's `tc_netem_rate` holds: u32::MAX bytes/s, in kbit/s.
pub const MAX_RATE_KBIT: u64 = u32::MAX as u64 * 8 / 1000;

/// Why a duplicating profile must be the only one: all profiles' netems share one qdisc tree
/// on the shaped device.
pub const DUPLICATE_ALONE: &str = "the kernel refuses a duplicating netem beside other netems \
    in one qdisc tree (\"netem: cannot mix duplicating netems with other netems in tree\", Linux \
    6.1.y stable and later), and every profile's netem shares the device's tree: a profiles file \
    with duplicate_percent can hold only that one profile";

fn check_percent(value: f64) -> Result<(), String> {
    if (0.0..=100.0).contains(&value) {
        Ok(())
    } else {
        Err(format!("{value} is outside 0 to 100"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "netem/profiles.toml";

    const VALID: &str = r#"
[[profile]]
base = 2222
port = 2322
delay_ms = 100
jitter_ms = 10
loss_percent = 0.0
description = "100ms latency"

[[profile]]
base = 2223
port = 2323
delay_ms = 50
jitter_ms = 5
loss_percent = 5
correlation_percent = 25.0
rate_kbit = 1000

[[profile]]
base = 2227
port = 2327
delay_ms = 100
jitter_ms = 30
loss_percent = 2.0
"#;

    fn error_with(from: &str, to: &str) -> String {
        assert!(VALID.contains(from), "{from:?} not in VALID");
        NetemProfiles::from_toml_str(&VALID.replacen(from, to, 1), FILE)
            .expect_err("should be rejected")
            .to_string()
    }

    fn assert_invalid(from: &str, to: &str, key: &str, needle: &str) {
        let message = error_with(from, to);
        let prefix = format!("{FILE}: {key}: ");
        assert!(message.starts_with(&prefix), "{message:?} lacks {prefix:?}");
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }

    /// The netem settings beyond delay, jitter and loss parse, and each is checked.
    #[test]
    fn distributions_reorder_duplicate_corrupt_and_seed() {
        let more = VALID.replacen(
            "rate_kbit = 1000",
            "rate_kbit = 1000\ndistribution = \"pareto\"\nreorder_percent = 25.0\n\
             corrupt_percent = 0.1\nseed = 42",
            1,
        );
        let n = NetemProfiles::from_toml_str(&more, FILE).expect("valid");
        let p = n.for_port(2323).expect("2323");
        assert_eq!(p.distribution, Some(Distribution::Pareto));
        assert_eq!(
            (
                p.reorder_percent,
                p.duplicate_percent,
                p.corrupt_percent,
                p.seed
            ),
            (Some(25.0), None, Some(0.1), Some(42))
        );
        let e = error_with("rate_kbit = 1000", "distribution = \"gamma\"");
        assert!(e.contains("expected `normal` or `pareto`"), "{e}");
        assert_invalid(
            "jitter_ms = 5\n",
            "jitter_ms = 0\ndistribution = \"normal\"\n",
            "profile[1].distribution",
            "give jitter_ms",
        );
        assert_invalid(
            "rate_kbit = 1000",
            "duplicate_percent = 101",
            "profile[1].duplicate_percent",
            "outside 0 to 100",
        );
        // The kernel refuses a duplicating netem beside others in one tree; alone it is fine.
        assert_invalid(
            "rate_kbit = 1000",
            "duplicate_percent = 5",
            "profile[1].duplicate_percent",
            "cannot mix duplicating netems",
        );
        let alone = "[[profile]]\nbase = 2223\nport = 2323\ndelay_ms = 10\njitter_ms = 0\n\
                     loss_percent = 0\nduplicate_percent = 30\n";
        NetemProfiles::from_toml_str(alone, FILE).expect("one duplicating profile");
        assert_invalid(
            "delay_ms = 50\njitter_ms = 5",
            "delay_ms = 0\njitter_ms = 0\nreorder_percent = 5",
            "profile[1].reorder_percent",
            "give delay_ms",
        );
    }

    #[test]
    fn valid_file_parses_and_for_port_finds_shaped_ports_only() {
        let n = NetemProfiles::from_toml_str(VALID, FILE).unwrap();
        assert_eq!(n.profiles.len(), 3);
        let p = n.for_port(2323).unwrap();
        assert_eq!((p.delay_ms, p.jitter_ms, p.loss_percent), (50, 5, 5.0));
        assert_eq!(
            (p.correlation_percent, p.rate_kbit),
            (Some(25.0), Some(1000))
        );
        assert_eq!(n.for_port(2322).unwrap().rate_kbit, None);
        assert!(n.for_port(2222).is_none());
        let again = toml::to_string(&n).unwrap();
        assert_eq!(NetemProfiles::from_toml_str(&again, FILE).unwrap(), n);
    }

    #[test]
    fn jitter_above_delay_is_rejected_with_exact_message() {
        assert_eq!(
            error_with(
                "delay_ms = 100\njitter_ms = 30",
                "delay_ms = 20\njitter_ms = 30"
            ),
            "netem/profiles.toml: profile[2].jitter_ms: 30 ms exceeds delay_ms (20 ms)"
        );
    }

    #[test]
    fn loss_and_correlation_outside_0_to_100_are_rejected() {
        assert_invalid(
            "loss_percent = 2.0",
            "loss_percent = 100.5",
            "profile[2].loss_percent",
            "outside 0 to 100",
        );
        assert_invalid(
            "loss_percent = 2.0",
            "loss_percent = -1.0",
            "profile[2].loss_percent",
            "outside 0 to 100",
        );
        assert_invalid(
            "loss_percent = 2.0",
            "loss_percent = nan",
            "profile[2].loss_percent",
            "outside 0 to 100",
        );
        assert_invalid(
            "= 25.0",
            "= 101.0",
            "profile[1].correlation_percent",
            "outside 0 to 100",
        );
    }

    #[test]
    fn duplicate_ports_are_rejected() {
        assert_invalid(
            "base = 2223",
            "base = 2222",
            "profile[1].base",
            "already has a profile",
        );
        assert_invalid(
            "port = 2323",
            "port = 2322",
            "profile[1].port",
            "already has a profile",
        );
        assert_invalid(
            "base = 2223",
            "base = 2322",
            "profile[1].base",
            "port of another profile",
        );
        assert_invalid(
            "port = 2323",
            "port = 2222",
            "profile[1].port",
            "base of another profile",
        );
        assert_invalid(
            "port = 2323",
            "port = 2223",
            "profile[1].port",
            "base port itself",
        );
    }

    #[test]
    fn zero_rate_and_bad_types_are_rejected() {
        assert_invalid(
            "rate_kbit = 1000",
            "rate_kbit = 0",
            "profile[1].rate_kbit",
            "at least 1",
        );
        let message = error_with("delay_ms = 50", "delay_ms = -50");
        assert!(message.starts_with("netem/profiles.toml: "), "{message}");
        assert!(message.contains("delay_ms = -50"), "{message}");
    }
}
