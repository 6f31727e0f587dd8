//! `sshlab net`: the host side of the lab's network, i.e. the bridge and one TAP per VM.
//!
//! [`NetPlan`] is resolved from the topology first (names validated, queue modes and owner
//! decided), and only then does [`up`], [`down`] or [`status()`] touch the kernel: links,
//! masters, up flags and addresses over rtnetlink ([`link`], `up`/`down` here), TAPs by the tun
//! ioctls ([`tap`]).
//!
//! `up` is idempotent: it reads the current state and does only what is missing, so a second
//! run changes nothing and a half-built state is completed. It refuses to touch a link that has
//! one of the lab's names but is not what the lab would have made (a bridge that is not a
//! bridge, a TAP in the other queue mode). `down` deletes exactly the links `up` creates (the
//! bridge's address goes with the bridge, the TAPs' qdiscs with the TAPs) and leaves any other
//! link alone. Nothing here has a `Drop` that tears down: the lab's links are meant to outlive
//! the process.

pub mod ifname;
pub mod link;
pub mod status;
pub mod tap;

use std::net::IpAddr;

use rtnetlink::{Handle, LinkBridge, LinkUnspec};
use sshlab_core::{Ipv4Cidr, Topology};

pub use status::{NetStatus, status};
pub use tap::TapSpec;

/// Errors of `sshlab net`: one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name the kernel would refuse.
    #[error("Refused: {reason}")]
    InvalidName {
        /// As given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The rtnetlink socket could not be opened.
    #[error("Cannot open an rtnetlink socket")]
    Connect(#[source] std::io::Error),
    /// A dump of links or addresses failed.
    #[error("Cannot read links or addresses from the kernel")]
    Dump(#[source] rtnetlink::Error),
    /// Creating the bridge failed.
    #[error("Cannot create bridge {name}")]
    CreateBridge {
        /// Bridge name.
        name: String,
        /// Kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A link with the bridge's name exists but is something else.
    #[error(
        "{name} exists but is not a bridge (kind {kind}); remove it or rename the bridge in vms/topology.toml"
    )]
    NotABridge {
        /// Link name.
        name: String,
        /// What it is.
        kind: String,
    },
    /// A link with a TAP's name exists but is not a TAP.
    #[error(
        "{name} exists but is not a TAP (kind {kind}); remove it or rename the tap in vms/topology.toml"
    )]
    NotATap {
        /// Link name.
        name: String,
        /// What it is.
        kind: String,
    },
    /// A TAP exists in the other queue mode (the kernel cannot change it in place).
    #[error(
        "TAP {name} exists with multi_queue {have}, the topology needs {want}; run `sshlab net down` first"
    )]
    TapQueueMode {
        /// TAP name.
        name: String,
        /// What the topology asks for.
        want: bool,
        /// What the kernel has.
        have: bool,
    },
    /// `/dev/net/tun` could not be opened (no tun module, or not root).
    #[error("Cannot open /dev/net/tun")]
    OpenTun(#[source] std::io::Error),
    /// `TUNSETIFF` failed.
    #[error("Cannot create TAP {name} (TUNSETIFF)")]
    CreateTap {
        /// TAP name.
        name: String,
        /// Kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// `TUNSETOWNER` failed.
    #[error("Cannot give TAP {name} to uid {uid} (TUNSETOWNER)")]
    SetOwner {
        /// TAP name.
        name: String,
        /// The owner asked for.
        uid: u32,
        /// Kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// `TUNSETPERSIST` failed.
    #[error("Cannot make TAP {name} persistent (TUNSETPERSIST)")]
    SetPersist {
        /// TAP name.
        name: String,
        /// Kernel's answer.
        #[source]
        source: nix::Error,
    },
    /// A link that was just created cannot be found.
    #[error("{name} vanished right after it was created")]
    Vanished {
        /// Link name.
        name: String,
    },
    /// Enslaving a TAP to the bridge failed.
    #[error("Cannot attach {name} to bridge {bridge}")]
    SetMaster {
        /// Port name.
        name: String,
        /// Bridge name.
        bridge: String,
        /// Kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// Setting a link up failed.
    #[error("Cannot set {name} up")]
    LinkUp {
        /// Link name.
        name: String,
        /// Kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// Adding the bridge's address failed.
    #[error("Cannot add {address} to {name}")]
    AddAddress {
        /// Link name.
        name: String,
        /// The address.
        address: Ipv4Cidr,
        /// Kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// Deleting a link failed.
    #[error("Cannot delete {name}")]
    Delete {
        /// Link name.
        name: String,
        /// Kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
}

/// What `net up` builds, resolved from the topology and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetPlan {
    /// Bridge name.
    pub bridge: String,
    /// The host's address on the bridge.
    pub address: Ipv4Cidr,
    /// One TAP per VM, with the VM's name.
    pub taps: Vec<(String, TapSpec)>,
}

impl NetPlan {
    /// From the topology. `owner` is the user the TAPs are given to (the VM runner's; `sshlab`
    /// uses `SUDO_UID` by default), `None` to leave the owner alone.
    pub fn new(topology: &Topology, owner: Option<u32>) -> Result<Self, Error> {
        ifname::validate(&topology.bridge.name)?;
        let mut taps = Vec::with_capacity(topology.vms.len());
        for vm in &topology.vms {
            ifname::validate(&vm.tap)?;
            taps.push((
                vm.name.clone(),
                TapSpec {
                    name: vm.tap.clone(),
                    multi_queue: vm.multi_queue(),
                    owner,
                },
            ));
        }
        Ok(Self {
            bridge: topology.bridge.name.clone(),
            address: topology.bridge.address,
            taps,
        })
    }
}

/// Opens an rtnetlink connection on the current thread's namespace and spawns its driver on
/// the current tokio runtime.
pub fn connect() -> Result<Handle, Error> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::Connect)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Brings the plan's links into existence and shape. Returns what it changed, one line per
/// step (empty when everything was already in place).
pub async fn up(handle: &Handle, plan: &NetPlan) -> Result<Vec<String>, Error> {
    let mut changes = Vec::new();
    let bridge = ensure_bridge(handle, plan, &mut changes).await?;
    for (_, spec) in &plan.taps {
        ensure_tap(handle, spec, &plan.bridge, bridge, &mut changes).await?;
    }
    Ok(changes)
}

async fn ensure_bridge(
    handle: &Handle,
    plan: &NetPlan,
    changes: &mut Vec<String>,
) -> Result<u32, Error> {
    let name = &plan.bridge;
    let existing = link::by_name(handle, name).await?;
    let bridge = match existing {
        Some(l) if !l.is_bridge() => {
            return Err(Error::NotABridge {
                name: name.clone(),
                kind: l.kind.unwrap_or_else(|| "none".into()),
            });
        }
        Some(l) => l,
        None => {
            // LinkBridge::new already sets IFF_UP.
            handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
                .map_err(|source| Error::CreateBridge {
                    name: name.clone(),
                    source,
                })?;
            changes.push(format!("created bridge {name}"));
            link::by_name(handle, name)
                .await?
                .ok_or_else(|| Error::Vanished { name: name.clone() })?
        }
    };
    if !bridge.up {
        set_up(handle, bridge.index, name, changes).await?;
    }
    let want = (plan.address.addr(), plan.address.prefix());
    if !link::ipv4_addresses(handle, bridge.index)
        .await?
        .contains(&want)
    {
        handle
            .address()
            .add(bridge.index, IpAddr::V4(want.0), want.1)
            .execute()
            .await
            .map_err(|source| Error::AddAddress {
                name: name.clone(),
                address: plan.address,
                source,
            })?;
        changes.push(format!("added {} to {name}", plan.address));
    }
    Ok(bridge.index)
}

async fn ensure_tap(
    handle: &Handle,
    spec: &TapSpec,
    bridge_name: &str,
    bridge: u32,
    changes: &mut Vec<String>,
) -> Result<(), Error> {
    let name = &spec.name;
    let existing = link::by_name(handle, name).await?;
    let needs_ioctls = match &existing {
        None => true,
        Some(l) => {
            let tun = match (l.is_tun(), l.tun) {
                (true, Some(tun)) if tun.tap => tun,
                _ => {
                    return Err(Error::NotATap {
                        name: name.clone(),
                        kind: l.kind.clone().unwrap_or_else(|| "none".into()),
                    });
                }
            };
            if tun.multi_queue != spec.multi_queue {
                return Err(Error::TapQueueMode {
                    name: name.clone(),
                    want: spec.multi_queue,
                    have: tun.multi_queue,
                });
            }
            tun.pi
                || !tun.vnet_hdr
                || !tun.persist
                || spec.owner.is_some_and(|uid| tun.owner != Some(uid))
        }
    };
    if needs_ioctls {
        tap::ensure(spec)?;
        let verb = if existing.is_some() {
            "repaired"
        } else {
            "created"
        };
        let owner = spec
            .owner
            .map_or_else(String::new, |uid| format!(", owner {uid}"));
        let mq = if spec.multi_queue {
            ", multi_queue"
        } else {
            ""
        };
        changes.push(format!("{verb} tap {name} (vnet_hdr{mq}{owner}, persist)"));
    }
    let tap = match existing {
        Some(l) => l,
        None => link::by_name(handle, name)
            .await?
            .ok_or_else(|| Error::Vanished { name: name.clone() })?,
    };
    if tap.master != Some(bridge) {
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(tap.index)
                    .controller(bridge)
                    .build(),
            )
            .execute()
            .await
            .map_err(|source| Error::SetMaster {
                name: name.clone(),
                bridge: bridge_name.to_owned(),
                source,
            })?;
        changes.push(format!("attached {name} to {bridge_name}"));
    }
    if !tap.up {
        set_up(handle, tap.index, name, changes).await?;
    }
    Ok(())
}

/// Deletes the plan's TAPs and bridge, where they exist and are what `up` makes. Returns what
/// it deleted and what it left alone (a link with a lab name that `up` would not have made).
pub async fn down(handle: &Handle, plan: &NetPlan) -> Result<Vec<String>, Error> {
    let mut changes = Vec::new();
    let links = link::all(handle).await?;
    let find = |name: &str| links.iter().find(|l| l.name == name);
    for (_, spec) in &plan.taps {
        match find(&spec.name) {
            Some(l) if l.is_tun() && l.tun.is_some_and(|t| t.tap) => {
                delete(handle, l, &mut changes).await?;
            }
            Some(l) => changes.push(format!(
                "left {} alone: not a TAP (kind {})",
                l.name,
                l.kind.as_deref().unwrap_or("none")
            )),
            None => {}
        }
    }
    match find(&plan.bridge) {
        Some(l) if l.is_bridge() => delete(handle, l, &mut changes).await?,
        Some(l) => changes.push(format!(
            "left {} alone: not a bridge (kind {})",
            l.name,
            l.kind.as_deref().unwrap_or("none")
        )),
        None => {}
    }
    Ok(changes)
}

/// Set link `index` (called `name`) up, and say so in `changes`.
async fn set_up(
    handle: &Handle,
    index: u32,
    name: &str,
    changes: &mut Vec<String>,
) -> Result<(), Error> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|source| Error::LinkUp {
            name: name.to_owned(),
            source,
        })?;
    changes.push(format!("set {name} up"));
    Ok(())
}

async fn delete(handle: &Handle, l: &link::Link, changes: &mut Vec<String>) -> Result<(), Error> {
    handle
        .link()
        .del(l.index)
        .execute()
        .await
        .map_err(|source| Error::Delete {
            name: l.name.clone(),
            source,
        })?;
    changes.push(format!("deleted {}", l.name));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topology() -> Topology {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        sshlab_core::Lab::load(root).expect("repo config").topology
    }

    #[test]
    fn plan_follows_the_topology() {
        let plan = NetPlan::new(&topology(), Some(1000)).unwrap();
        assert_eq!(plan.bridge, "sshbr0");
        assert_eq!(plan.address.to_string(), "10.178.0.1/24");
        let names: Vec<_> = plan.taps.iter().map(|(_, t)| t.name.as_str()).collect();
        assert_eq!(names, ["sshtap0", "sshtap1", "sshtap2"]);
        // Every VM of the topology has more than one vCPU.
        assert!(plan.taps.iter().all(|(_, t)| t.multi_queue));
        assert!(plan.taps.iter().all(|(_, t)| t.owner == Some(1000)));
    }

    #[test]
    fn one_vcpu_means_single_queue() {
        let mut topo = topology();
        topo.vms[0].vcpus = 1;
        let plan = NetPlan::new(&topo, None).unwrap();
        assert!(!plan.taps[0].1.multi_queue);
    }

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        let mut topo = topology();
        topo.vms[1].tap = "much-too-long-tap0".into();
        let err = NetPlan::new(&topo, None).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    }
}
