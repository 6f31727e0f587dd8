//! `sshlab net status`: what exists in the kernel, against what the topology asks for.

use std::fmt::{self, Write as _};

use rtnetlink::Handle;
use serde::Serialize;

use super::link::{self, Link, TunInfo};
use super::{Error, NetPlan};

/// The whole report; `--json` prints it as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetStatus {
    /// Everything exists and matches the plan.
    pub ready: bool,
    /// The bridge.
    pub bridge: BridgeStatus,
    /// One entry per VM.
    pub taps: Vec<TapStatus>,
}

/// The bridge, as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BridgeStatus {
    /// Its name in the topology.
    pub name: String,
    /// The address it should carry.
    pub want_address: String,
    /// The link with that name, if any.
    pub found: Option<Link>,
    /// Its IPv4 addresses (`a.b.c.d/n`).
    pub addresses: Vec<String>,
    /// What differs from the plan (empty when it matches).
    pub problems: Vec<String>,
}

/// One TAP, as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TapStatus {
    /// The VM it belongs to.
    pub vm: String,
    /// Its name in the topology.
    pub name: String,
    /// Whether it should be multi-queue.
    pub want_multi_queue: bool,
    /// The owner it should have, when one was asked for.
    pub want_owner: Option<u32>,
    /// The link with that name, if any.
    pub found: Option<Link>,
    /// Name of the bridge it is attached to, if any.
    pub master: Option<String>,
    /// What differs from the plan (empty when it matches).
    pub problems: Vec<String>,
}

/// Reads the kernel's state and compares it with `plan`.
pub async fn status(handle: &Handle, plan: &NetPlan) -> Result<NetStatus, Error> {
    let links = link::all(handle).await?;
    let find = |name: &str| links.iter().find(|l| l.name == name).cloned();
    let want_address = plan.address.to_string();

    let found = find(&plan.bridge);
    let mut addresses = Vec::new();
    let mut problems = Vec::new();
    match &found {
        None => problems.push("missing".to_owned()),
        Some(l) => {
            if !l.is_bridge() {
                problems.push(format!("not a bridge: kind {:?}", l.kind));
            }
            if !l.up {
                problems.push("down".to_owned());
            }
            addresses = link::ipv4_addresses(handle, l.index)
                .await?
                .into_iter()
                .map(|(ip, p)| format!("{ip}/{p}"))
                .collect();
            if !addresses.contains(&want_address) {
                problems.push(format!("no address {want_address}"));
            }
        }
    }
    let bridge_index = found.as_ref().filter(|l| l.is_bridge()).map(|l| l.index);
    let bridge = BridgeStatus {
        name: plan.bridge.clone(),
        want_address,
        found,
        addresses,
        problems,
    };

    let taps = plan
        .taps
        .iter()
        .map(|(vm, spec)| {
            let found = find(&spec.name);
            let master = found.as_ref().and_then(|l| l.master).map(|idx| {
                links
                    .iter()
                    .find(|m| m.index == idx)
                    .map_or_else(|| format!("#{idx}"), |m| m.name.clone())
            });
            let mut problems = Vec::new();
            match &found {
                None => problems.push("missing".to_owned()),
                Some(l) => tap_problems(l, spec, bridge_index, &mut problems),
            }
            TapStatus {
                vm: vm.clone(),
                name: spec.name.clone(),
                want_multi_queue: spec.multi_queue,
                want_owner: spec.owner,
                found,
                master,
                problems,
            }
        })
        .collect::<Vec<_>>();

    let ready = bridge.problems.is_empty() && taps.iter().all(|t| t.problems.is_empty());
    Ok(NetStatus {
        ready,
        bridge,
        taps,
    })
}

fn tap_problems(l: &Link, spec: &super::TapSpec, bridge: Option<u32>, out: &mut Vec<String>) {
    let Some(tun) = l.tun.filter(|t| l.is_tun() && t.tap) else {
        out.push(format!("not a TAP: kind {:?}", l.kind));
        return;
    };
    if tun.multi_queue != spec.multi_queue {
        out.push(format!("multi_queue {}", tun.multi_queue));
    }
    if tun.pi {
        out.push("pi on".to_owned());
    }
    if !tun.vnet_hdr {
        out.push("vnet_hdr off".to_owned());
    }
    if !tun.persist {
        out.push("not persistent".to_owned());
    }
    if let Some(uid) = spec.owner
        && tun.owner != Some(uid)
    {
        out.push(format!("owner {:?}, want {uid}", tun.owner));
    }
    if bridge.is_none() || l.master != bridge {
        out.push("not attached to the bridge".to_owned());
    }
    if !l.up {
        out.push("down".to_owned());
    }
}

fn flags(tun: &TunInfo) -> String {
    let mut s = String::from("tap");
    for (on, name) in [
        (tun.multi_queue, "multi_queue"),
        (tun.vnet_hdr, "vnet_hdr"),
        (tun.persist, "persist"),
        (tun.pi, "pi"),
    ] {
        if on {
            s.push(' ');
            s.push_str(name);
        }
    }
    if let Some(uid) = tun.owner {
        let _ = write!(s, " owner {uid}");
    }
    s
}

impl fmt::Display for NetStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = |p: &[String]| {
            if p.is_empty() {
                "ok".to_owned()
            } else {
                p.join(", ")
            }
        };
        let b = &self.bridge;
        let state = match &b.found {
            Some(l) => format!(
                "{} {}",
                if l.up { "up" } else { "down" },
                b.addresses.join(" ")
            ),
            None => "absent".to_owned(),
        };
        writeln!(
            f,
            "bridge {:<8} {:<28} {}",
            b.name,
            state,
            verdict(&b.problems)
        )?;
        for t in &self.taps {
            let state = match &t.found {
                Some(l) => format!(
                    "{} {} master {}",
                    if l.up { "up" } else { "down" },
                    l.tun.as_ref().map_or_else(|| "not tun".to_owned(), flags),
                    t.master.as_deref().unwrap_or("none"),
                ),
                None => "absent".to_owned(),
            };
            writeln!(
                f,
                "tap    {:<8} {:<7} {state}: {}",
                t.name,
                t.vm,
                verdict(&t.problems)
            )?;
        }
        let summary = if self.ready {
            "ready"
        } else {
            "not ready (sshlab net up builds what is missing)"
        };
        write!(f, "{summary}")
    }
}
