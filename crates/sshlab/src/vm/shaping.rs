//! netem on the lab's target link, as `vm up` leaves it and `run` and `status` read it.
//!
//! On the netns backend `vm up` shapes the host end of the target's veth (it carries the TAP's
//! name, so the plans are exactly `sshlab net up`'s: [`crate::netem::lab`], destination-port
//! filters toward the target, and source-port ones on the MCP VM's veth for the profiles shaped
//! both ways). On the microvm backend `sshlab net up` shaped the TAP before the
//! VMs started; `vm up` only reads back what is there. Either way the outcome goes into the
//! state file as a [`LabNetem`], because a kernel without `sch_prio`/`sch_netem` (this CI
//! machine's) must not stop the lab: it comes up unshaped, says why, and `run latency_test`
//! then runs the baseline port only and prints that the netem ports were skipped and why,
//! instead of measuring 2322..2328 unshaped and calling them degraded.

use serde::{Deserialize, Serialize};
use sshlab_core::{NetemProfiles, Topology};

use crate::netem;
use crate::netem::lab::{self, LabPlans};

/// Whether the lab's degraded ports are shaped, recorded in the state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LabNetem {
    /// The profiles are installed on `dev` (and the kernel holds exactly them).
    pub applied: bool,
    /// The shaped link: the target's TAP, or the veth end named like it.
    pub dev: String,
    /// The profiles' ports (shaped when `applied`), in file order.
    pub ports: Vec<u16>,
    /// Why they are not shaped, for people (`None` when applied).
    pub reason: Option<String>,
    /// Qdisc modules the kernel lacks (`sch_prio`, `sch_netem`), when that is the reason.
    pub missing_modules: Vec<String>,
    /// Applied inside the target guest on its own NIC (qemu backend, when the host kernel
    /// lacks the qdiscs), matching source ports; the host cannot re-check it.
    pub in_guest: bool,
    /// The profiles also shaped the other way (`both_ways`), in file order: on `back_dev`,
    /// the way back from the target (or, in the guests, the MCP guest's own NIC).
    pub back_ports: Vec<u16>,
    /// Where the other way is shaped, when `back_ports` is not empty.
    pub back_dev: Option<String>,
}

impl LabNetem {
    /// Shaped: `ports` on `dev`.
    pub fn on(dev: &str, ports: Vec<u16>) -> Self {
        Self {
            applied: true,
            dev: dev.to_owned(),
            ports,
            reason: None,
            missing_modules: Vec::new(),
            in_guest: false,
            back_ports: Vec::new(),
            back_dev: None,
        }
    }

    /// Not shaped, for `reason`.
    pub fn off(dev: &str, ports: Vec<u16>, reason: impl Into<String>) -> Self {
        Self {
            applied: false,
            dev: dev.to_owned(),
            ports,
            reason: Some(reason.into()),
            missing_modules: Vec::new(),
            in_guest: false,
            back_ports: Vec::new(),
            back_dev: None,
        }
    }

    /// One line: `applied on sshtap2 (ports 2322..2328)` or `not applied: <reason>`, and where
    /// the profiles shaped both ways are shaped back.
    pub fn describe(&self) -> String {
        let back = match (&self.back_dev, self.back_ports.is_empty()) {
            (Some(dev), false) if self.in_guest => format!(
                "; both ways for {}: also in the MCP guest on its {dev} (match dport)",
                port_list(&self.back_ports)
            ),
            (Some(dev), false) => format!(
                "; both ways for {}: also back on {dev} (match sport)",
                port_list(&self.back_ports)
            ),
            _ => String::new(),
        };
        if self.applied && self.in_guest {
            format!(
                "applied in the target guest on its {} (match sport; ports {}){back}",
                self.dev,
                port_list(&self.ports)
            )
        } else if self.applied {
            format!(
                "applied on {} (ports {}){back}",
                self.dev,
                port_list(&self.ports)
            )
        } else {
            format!("not applied: {}", self.why())
        }
    }

    /// `self`, recording that `plans` shape their profiles both ways too.
    fn with_back(mut self, plans: &LabPlans) -> Self {
        if let Some(back) = plans.shaped_back() {
            self.back_ports = back.classes.iter().map(|c| c.port).collect();
            self.back_dev = Some(back.dev.clone());
        }
        self
    }

    /// The reason, or a placeholder for state files written before it was recorded.
    pub fn why(&self) -> &str {
        self.reason
            .as_deref()
            .unwrap_or("unknown (the lab's state file does not record netem)")
    }

    /// The ports a `baseline+netem` scenario should cover: the baseline, then the netem ports
    /// when they are shaped. When they are not, also the line saying they were skipped and why.
    pub fn scenario_ports(&self, baseline: u16) -> (Vec<u16>, Option<String>) {
        if self.applied {
            let ports = std::iter::once(baseline)
                .chain(self.ports.iter().copied())
                .collect();
            (ports, None)
        } else {
            let what = if self.ports.is_empty() {
                "netem ports".to_owned()
            } else {
                format!("netem ports {}", port_list(&self.ports))
            };
            (
                vec![baseline],
                Some(format!("{what} skipped: {}", self.why())),
            )
        }
    }
}

/// `2322..2328` for a contiguous run, else `2322, 2324`.
pub fn port_list(ports: &[u16]) -> String {
    let contiguous = ports.windows(2).all(|w| w[1] == w[0].wrapping_add(1));
    match ports {
        [] => "none".to_owned(),
        [one] => one.to_string(),
        [first, .., last] if contiguous => format!("{first}..{last}"),
        _ => ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn profile_ports(profiles: &NetemProfiles) -> Vec<u16> {
    profiles.profiles.iter().map(|p| p.port).collect()
}

/// The target's link name, for records made before any plan exists.
fn target_dev(topology: &Topology) -> String {
    topology
        .vm(sshlab_core::topology::TARGET_VM)
        .map(|v| v.tap.clone())
        .unwrap_or_default()
}

/// netns backend: installs `profiles` on the target's host-side link (in the current
/// namespace). A kernel without the qdisc modules is an outcome, not an error: the record says
/// which modules are missing. Anything else the kernel refuses is an error (the lab is then
/// torn down by `vm up`), because it means sshlab, not the machine, is wrong.
pub fn apply(topology: &Topology, profiles: Option<&NetemProfiles>) -> anyhow::Result<LabNetem> {
    let Some(profiles) = profiles else {
        return Ok(LabNetem::off(
            &target_dev(topology),
            Vec::new(),
            "--no-netem was given",
        ));
    };
    let plans = LabPlans::new(topology, profiles)?;
    let plan = &plans.toward;
    let ports = profile_ports(profiles);
    match lab::apply(&plans) {
        Ok(_) => Ok(LabNetem::on(&plan.dev, ports).with_back(&plans)),
        Err(e @ netem::Error::MissingModule { .. }) => {
            // Name every missing module, not just the first one apply tripped on.
            let missing = netem::missing_modules(&plan.dev).unwrap_or_default();
            let reason = if missing.is_empty() {
                e.to_string()
            } else {
                format!(
                    "kernel module{} {} missing (`modprobe {}`, or a kernel that has {})",
                    if missing.len() > 1 { "s" } else { "" },
                    missing.join(" and "),
                    missing.join(" "),
                    if missing.len() > 1 { "them" } else { "it" },
                )
            };
            let mut rec = LabNetem::off(&plan.dev, ports, reason);
            rec.missing_modules = missing.iter().map(|m| (*m).to_owned()).collect();
            Ok(rec)
        }
        Err(e) => Err(anyhow::Error::new(e).context("VM target: netem")),
    }
}

/// What the kernel holds on the target's link, against `profiles` (microvm: `sshlab net up`
/// applied it; `status`: still there?). Never fails: an unreadable link is a reason.
pub fn observe(topology: &Topology, profiles: Option<&NetemProfiles>) -> LabNetem {
    let Some(profiles) = profiles else {
        return LabNetem::off(&target_dev(topology), Vec::new(), "--no-netem was given");
    };
    let ports = profile_ports(profiles);
    let plans = match LabPlans::new(topology, profiles) {
        Ok(p) => p,
        Err(e) => return LabNetem::off(&target_dev(topology), ports, e.to_string()),
    };
    let plan = &plans.toward;
    match lab::show(&plans) {
        Ok(s) if s.ready => LabNetem::on(&plan.dev, ports).with_back(&plans),
        Ok(_) => LabNetem::off(
            &plan.dev,
            ports,
            format!(
                "the qdiscs on {} do not match netem/profiles.toml (`sshlab netem show`; `sshlab netem apply`)",
                match plans.shaped_back() {
                    Some(back) => format!("{} and {}", plan.dev, back.dev),
                    None => plan.dev.clone(),
                }
            ),
        ),
        Err(e) => LabNetem::off(&plan.dev, ports, e.to_string()),
    }
}

/// `vm status`: the recorded state, re-checked against the kernel when it says applied (a
/// `sshlab netem clear` since `up` shows). Without profiles, the record as it is.
pub fn verify(
    recorded: &LabNetem,
    topology: &Topology,
    profiles: Option<&NetemProfiles>,
) -> LabNetem {
    match profiles {
        Some(_) if recorded.applied && !recorded.in_guest => observe(topology, profiles),
        _ => recorded.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn off() -> LabNetem {
        let mut n = LabNetem::off(
            "sshtap2",
            (2322..=2328).collect(),
            "kernel modules sch_prio and sch_netem missing",
        );
        n.missing_modules = vec!["sch_prio".into(), "sch_netem".into()];
        n
    }

    #[test]
    fn unshaped_lab_runs_the_baseline_only_and_says_why() {
        let (ports, line) = off().scenario_ports(2222);
        assert_eq!(ports, [2222]);
        assert_eq!(
            line.as_deref(),
            Some("netem ports 2322..2328 skipped: kernel modules sch_prio and sch_netem missing")
        );
        assert_eq!(
            off().describe(),
            "not applied: kernel modules sch_prio and sch_netem missing"
        );
    }

    #[test]
    fn shaped_lab_runs_baseline_then_netem_ports() {
        let n = LabNetem::on("sshtap2", vec![2322, 2323]);
        assert_eq!(n.scenario_ports(2222), (vec![2222, 2322, 2323], None));
        assert_eq!(n.describe(), "applied on sshtap2 (ports 2322..2323)");
    }

    #[test]
    fn the_way_back_is_said() {
        let lab = sshlab_core::Lab::builtin().expect("lab");
        let mut profiles = lab.netem.clone();
        profiles.profiles[0].both_ways = true;
        let plans = LabPlans::new(&lab.topology, &profiles).expect("plans");
        let n = LabNetem::on("sshtap2", vec![2322, 2323]).with_back(&plans);
        assert_eq!(n.back_ports, [2322]);
        assert_eq!(
            n.describe(),
            "applied on sshtap2 (ports 2322..2323); both ways for 2322: also back on sshtap1 \
             (match sport)"
        );
        let one_way = LabPlans::new(&lab.topology, &lab.netem).expect("plans");
        let n = LabNetem::on("sshtap2", vec![2322]).with_back(&one_way);
        assert_eq!(n.describe(), "applied on sshtap2 (ports 2322)");
        // State files from before the field read as one way.
        let old: LabNetem = serde_json::from_str(r#"{"applied":true,"dev":"sshtap2"}"#).unwrap();
        assert!(old.back_ports.is_empty() && old.back_dev.is_none());
    }

    #[test]
    fn old_state_files_read_as_unknown_not_applied() {
        let n: LabNetem = serde_json::from_str("{}").unwrap();
        assert!(!n.applied);
        let (ports, line) = n.scenario_ports(2222);
        assert_eq!(ports, [2222]);
        assert!(line.unwrap().contains("unknown"));
    }

    #[test]
    fn port_lists() {
        assert_eq!(port_list(&[]), "none");
        assert_eq!(port_list(&[2322]), "2322");
        assert_eq!(port_list(&[2322, 2323, 2324]), "2322..2324");
        assert_eq!(port_list(&[2322, 2324]), "2322, 2324");
    }

    #[test]
    fn no_netem_is_recorded_as_the_reason() {
        let lab = sshlab_core::Lab::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).unwrap();
        let n = apply(&lab.topology, None).unwrap();
        assert!(!n.applied);
        assert_eq!(n.dev, "sshtap2");
        assert_eq!(n.why(), "--no-netem was given");
    }
}
