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
    /// Back from it: the MCP VM's link, source ports, the profiles shaped both ways (none:
    /// nothing to shape there).
    pub back: NetemPlan,
}

impl LabPlans {
    /// The lab's plans for `profiles`.
    pub fn new(topology: &Topology, profiles: &NetemProfiles) -> Result<Self, Error> {
        let toward = NetemPlan::new(topology, profiles, None, None)?;
        let dev = &topology.vm(MCP_VM).ok_or(Error::NoMcp)?.tap;
        let back = NetemPlan::both_ways(profiles, dev, PortMatch::Sport)?;
        Ok(Self { toward, back })
    }

    /// Whether any profile is shaped on the way back.
    pub fn shapes_back(&self) -> bool {
        !self.back.classes.is_empty()
    }
}

/// Installs both directions (and clears the way back when nothing is shaped there).
pub fn apply(plans: &LabPlans) -> Result<Vec<String>, Error> {
    let mut changes = super::apply(&plans.toward)?;
    changes.extend(match plans.shapes_back() {
        true => super::apply(&plans.back)?,
        false => clear_back(&plans.back)?,
    });
    Ok(changes)
}

/// Removes both directions' qdiscs.
pub fn clear(plans: &LabPlans) -> Result<Vec<String>, Error> {
    let mut changes = super::clear(&plans.toward)?;
    changes.extend(clear_back(&plans.back)?);
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
    let back = match super::show(&plans.back) {
        Ok(b) => Some(b),
        Err(Error::NoSuchDevice { .. }) if !plans.shapes_back() => None,
        Err(e) => return Err(e),
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
        assert_eq!(&plans.back.dev, mcp_tap);
        assert_eq!(plans.back.port_match, PortMatch::Sport);
        let back: Vec<(u16, u16)> = plans
            .back
            .classes
            .iter()
            .map(|c| (c.port, c.minor))
            .collect();
        // Numbered from the first band after prio's own three: the plan's tree has two bands
        // more, not six.
        assert_eq!(
            back,
            [
                (profiles.profiles[2].port, 4),
                (profiles.profiles[5].port, 5)
            ]
        );
        assert_eq!(plans.back.classes[0].netem, plans.toward.classes[2].netem);
        assert_eq!(plans.toward.classes.len(), profiles.profiles.len());
    }
}
