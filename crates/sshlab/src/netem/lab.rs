//! The lab's shaping, as `sshlab net up`, `vm up` (netns) and `sshlab netem apply|show|clear`
//! without `--dev` make it: toward the target on its link, every profile, matching destination
//! ports; and, for the profiles shaped both ways (`both_ways` in netem/profiles.toml), back
//! from it on the MCP VM's link, matching source ports. On the bridge the target's replies
//! leave through the MCP VM's TAP (the only VM that talks to the target's ports): that link's
//! egress is where they can be delayed, as a TAP's ingress takes no netem.
//!
//! With no profile shaped both ways, nothing sshlab made stays on the MCP VM's link: [`apply`]
//! removes what an earlier file's both-ways profile left there.

use sshlab_core::topology::MCP_VM;
use sshlab_core::{NetemProfiles, Topology};

use super::{Error, NetemPlan, NetemState, PortMatch};

/// The two directions' plans.
#[derive(Debug, Clone, PartialEq)]
pub struct LabPlans {
    /// Toward the target: its link, destination ports, every profile.
    pub toward: NetemPlan,
    /// Back from it: the MCP VM's link, source ports, the profiles shaped both ways (no
    /// class: nothing to shape there). `None` for a lab without an MCP VM, whose profiles
    /// cannot be shaped both ways.
    pub back: Option<NetemPlan>,
}

impl LabPlans {
    /// The lab's plans for `profiles`.
    pub fn new(topology: &Topology, profiles: &NetemProfiles) -> Result<Self, Error> {
        let toward = NetemPlan::new(topology, profiles, None, None)?;
        let back = match topology.vm(MCP_VM) {
            Some(mcp) => Some(NetemPlan::both_ways(profiles, &mcp.tap, PortMatch::Sport)?),
            None if profiles.profiles.iter().any(|p| p.both_ways) => return Err(Error::NoMcp),
            None => None,
        };
        Ok(Self { toward, back })
    }

    /// The way back, when any profile is shaped on it.
    pub fn shaped_back(&self) -> Option<&NetemPlan> {
        self.back.as_ref().filter(|b| !b.classes.is_empty())
    }

    /// Whether any profile is shaped on the way back.
    pub fn shapes_back(&self) -> bool {
        self.shaped_back().is_some()
    }
}

/// Installs both directions (and clears the way back when nothing is shaped there).
pub fn apply(plans: &LabPlans) -> Result<Vec<String>, Error> {
    let mut changes = super::apply(&plans.toward)?;
    changes.extend(match (plans.shaped_back(), &plans.back) {
        (Some(back), _) => super::apply(back)?,
        (None, Some(back)) => clear_back(back)?,
        (None, None) => Vec::new(),
    });
    Ok(changes)
}

/// Removes both directions' qdiscs.
pub fn clear(plans: &LabPlans) -> Result<Vec<String>, Error> {
    let mut changes = super::clear(&plans.toward)?;
    if let Some(back) = &plans.back {
        changes.extend(clear_back(back)?);
    }
    Ok(changes)
}

/// The way back with nothing to shape: what sshlab left there goes; a missing link (the MCP
/// VM not up) has nothing to clear.
fn clear_back(back: &NetemPlan) -> Result<Vec<String>, Error> {
    match super::clear(back) {
        Err(Error::NoSuchDevice { .. }) => Ok(Vec::new()),
        other => other,
    }
}

/// Both directions against the kernel: the state toward the target, with the way back in
/// `back` when it is shaped or holds sshlab's qdiscs; `ready` only when both are as planned.
pub fn show(plans: &LabPlans) -> Result<NetemState, Error> {
    let mut toward = super::show(&plans.toward)?;
    let back = match plans.back.as_ref().map(super::show) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(Error::NoSuchDevice { .. })) if !plans.shapes_back() => None,
        Some(Err(e)) => return Err(e),
    };
    if let Some(mut back) = back {
        if !plans.shapes_back() && back.ours {
            back.ready = false;
            back.extra
                .push("sshlab's qdiscs, but no profile is shaped both ways".into());
        }
        if plans.shapes_back() || back.ours {
            toward.ready &= back.ready;
            toward.back = Some(Box::new(back));
        }
    }
    Ok(toward)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> sshlab_core::Lab {
        sshlab_core::Lab::builtin().expect("built-in lab")
    }

    #[test]
    fn only_the_profiles_shaped_both_ways_are_shaped_back_on_the_mcp_link() {
        let lab = lab();
        let mut profiles = lab.netem.clone();
        let plans = LabPlans::new(&lab.topology, &profiles).expect("plans");
        assert!(!plans.shapes_back());
        assert_eq!(plans.toward.classes.len(), profiles.profiles.len());
        assert_eq!(plans.toward.port_match, PortMatch::Dport);
        profiles.profiles[2].both_ways = true;
        profiles.profiles[5].both_ways = true;
        let plans = LabPlans::new(&lab.topology, &profiles).expect("plans");
        let mcp_tap = &lab.topology.vm(MCP_VM).expect("mcp").tap;
        let plan = plans.shaped_back().expect("shaped back");
        assert_eq!(&plan.dev, mcp_tap);
        assert_eq!(plan.port_match, PortMatch::Sport);
        let back: Vec<(u16, u16)> = plan.classes.iter().map(|c| (c.port, c.minor)).collect();
        // Numbered from the first band after prio's own three: the plan's tree has two bands
        // more, not six.
        assert_eq!(
            back,
            [
                (profiles.profiles[2].port, 4),
                (profiles.profiles[5].port, 5)
            ]
        );
        assert_eq!(plan.classes[0].netem, plans.toward.classes[2].netem);
        assert_eq!(plans.toward.classes.len(), profiles.profiles.len());
    }
}
