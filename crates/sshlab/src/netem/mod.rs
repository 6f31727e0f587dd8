//! `sshlab netem`: per-port delay, jitter and loss on one interface's egress, by tc over
//! netlink (no `tc` binary).
//!
//! The shape is the classic one: a `prio` root qdisc `1:` with three bands for ordinary traffic
//! (the default priomap uses only those) plus one band per profile, a `netem` child `1x:` on
//! each profile's band, and a u32 filter per profile sending its port to its band. On the host
//! the device is the Target's TAP and the filter matches the destination port: TAP egress is the
//! traffic *towards* the Target, so requests to 2322 wait 100 ms and the replies do not; the
//! delay is added once per round trip. Inside a guest shaping its own interface (the Nix VM
//! test), the server's replies leave with the port as source port: `--match sport`.
//!
//! [`apply`] is idempotent: when the kernel already holds exactly the plan it changes nothing;
//! otherwise it replaces the root it made before (never a root someone else made). It deletes
//! its root again if a later step fails, so no half-shaped device is left. [`clear`] deletes
//! that root, which takes the children and filters with it.
//!
//! A kernel without `sch_prio` or `sch_netem` answers the qdisc request with ENOENT ("Specified
//! qdisc kind is unknown"): that becomes one [`Error::MissingModule`] naming the module.

pub mod dist;
pub mod lab;
pub mod sock;
pub mod tc;

use std::fmt;

use serde::Serialize;
use sshlab_core::netem::NetemProfile;
use sshlab_core::{NetemProfiles, Topology, topology::TARGET_VM};

use crate::net::ifname;
use sock::{KernelError, Tc};
pub use tc::{Netem, PortMatch};

/// Major of the root qdisc `sshlab` makes (`1:`).
pub const ROOT_MAJOR: u16 = 1;
/// Bands of the prio root used by ordinary traffic (tc's default priomap uses 0..=2).
const DEFAULT_BANDS: u16 = 3;
/// The most bands prio has (`TCQ_PRIO_BANDS`).
const MAX_BANDS: u16 = 16;
/// Priority of the u32 filters.
const FILTER_PRIO: u16 = 1;

/// Errors of `sshlab netem`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device name is not a valid interface name.
    #[error(transparent)]
    InvalidName(#[from] crate::net::Error),
    /// No target VM in the topology to take the default device from.
    #[error("No vm {TARGET_VM:?} in the topology: pass --dev")]
    NoTarget,
    /// No MCP VM in the topology, whose link the way back is shaped on.
    #[error(
        "No vm {:?} in the topology: the profiles shaped both ways need its link",
        sshlab_core::topology::MCP_VM
    )]
    NoMcp,
    /// More profiles than prio has bands.
    #[error("{count} netem profiles, but prio has room for {max}")]
    TooManyProfiles {
        /// Profiles given.
        count: usize,
        /// The maximum.
        max: u16,
    },
    /// A profile's seed was not kept by the kernel (older than Linux 6.6).
    #[error(
        "The kernel's netem on {dev} kept no seed for port {port}: seeds need Linux 6.6 or later \
         (TCA_NETEM_PRNG_SEED); remove `seed` from that profile"
    )]
    SeedNotKept {
        /// The device.
        dev: String,
        /// The profile's port.
        port: u16,
    },
    /// The device does not exist (in this namespace).
    #[error("No interface {dev} (run `sshlab net up` first, with the same --netns)")]
    NoSuchDevice {
        /// Device name.
        dev: String,
    },
    /// The netlink socket could not be opened.
    #[error("Cannot open an rtnetlink socket")]
    Socket(#[source] KernelError),
    /// The kernel lacks a qdisc module.
    #[error("Kernel lacks {module}: run `modprobe {module}`{also}")]
    MissingModule {
        /// `sch_prio` or `sch_netem`.
        module: &'static str,
        /// A note on what else will be needed.
        also: &'static str,
    },
    /// The device's root qdisc was made by someone else.
    #[error(
        "{dev} already has a root qdisc sshlab did not make ({kind} {handle}); remove it first"
    )]
    ForeignRoot {
        /// Device name.
        dev: String,
        /// Its kind.
        kind: String,
        /// Its handle.
        handle: String,
    },
    /// Adding the root qdisc failed.
    #[error("Cannot add the prio root qdisc on {dev}")]
    AddRoot {
        /// Device name.
        dev: String,
        /// Kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Adding a netem qdisc failed.
    #[error("Cannot add netem for port {port} on {dev}")]
    AddNetem {
        /// Device name.
        dev: String,
        /// The profile's port.
        port: u16,
        /// Kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Adding a filter failed.
    #[error("Cannot add the u32 filter for port {port} on {dev}")]
    AddFilter {
        /// Device name.
        dev: String,
        /// The profile's port.
        port: u16,
        /// Kernel's answer.
        #[source]
        source: KernelError,
    },
    /// Deleting the root qdisc failed.
    #[error("Cannot delete the root qdisc on {dev}")]
    DeleteRoot {
        /// Device name.
        dev: String,
        /// Kernel's answer.
        #[source]
        source: KernelError,
    },
    /// A dump failed.
    #[error("Cannot read the {what} of {dev}")]
    Dump {
        /// Qdiscs or filters.
        what: &'static str,
        /// Device name.
        dev: String,
        /// Kernel's answer.
        #[source]
        source: KernelError,
    },
}

/// One profile's place in the tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Class {
    /// The shaped port.
    pub port: u16,
    /// Its unshaped twin.
    pub base: u16,
    /// What the profile is for.
    pub description: String,
    /// The prio class (`1:minor`) its filter sends it to.
    pub minor: u16,
    /// The netem qdisc's major (`major:`).
    pub major: u16,
    /// The settings.
    pub netem: Netem,
}

/// What `netem apply` builds, resolved and validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetemPlan {
    /// The shaped device.
    pub dev: String,
    /// Which port the filters match.
    pub port_match: PortMatch,
    /// One per profile, in file order.
    pub classes: Vec<Class>,
}

impl NetemPlan {
    /// From the config: `dev` defaults to the target VM's TAP, `port_match` to dport. Every
    /// profile, one way (see [`lab`] for the lab's both ways).
    pub fn new(
        topology: &Topology,
        profiles: &NetemProfiles,
        dev: Option<&str>,
        port_match: Option<PortMatch>,
    ) -> Result<Self, Error> {
        let dev = match dev {
            Some(d) => d.to_owned(),
            None => topology.vm(TARGET_VM).ok_or(Error::NoTarget)?.tap.clone(),
        };
        Self::of(
            dev,
            port_match.unwrap_or(PortMatch::Dport),
            profiles.profiles.iter().collect(),
        )
    }

    /// The other way of a lab shaped one way: only the profiles shaped both ways
    /// (`both_ways`), on `dev`, matching `port_match`. No class when none is.
    pub fn both_ways(
        profiles: &NetemProfiles,
        dev: &str,
        port_match: PortMatch,
    ) -> Result<Self, Error> {
        Self::of(
            dev.to_owned(),
            port_match,
            profiles.profiles.iter().filter(|p| p.both_ways).collect(),
        )
    }

    fn of(dev: String, port_match: PortMatch, profiles: Vec<&NetemProfile>) -> Result<Self, Error> {
        ifname::validate(&dev)?;
        let max = MAX_BANDS - DEFAULT_BANDS;
        if profiles.len() > usize::from(max) {
            return Err(Error::TooManyProfiles {
                count: profiles.len(),
                max,
            });
        }
        let classes = (0u16..)
            .zip(profiles)
            .map(|(i, p)| Class {
                port: p.port,
                base: p.base,
                description: p.description.clone(),
                minor: DEFAULT_BANDS + 1 + i,
                major: 0x10 + i,
                netem: Netem {
                    delay_ms: p.delay_ms,
                    jitter_ms: p.jitter_ms,
                    loss_percent: p.loss_percent,
                    correlation_percent: p.correlation_percent,
                    rate_kbit: p.rate_kbit,
                    distribution: p.distribution,
                    reorder_percent: p.reorder_percent,
                    duplicate_percent: p.duplicate_percent,
                    corrupt_percent: p.corrupt_percent,
                    seed: p.seed,
                },
            })
            .collect();
        Ok(Self {
            dev,
            port_match,
            classes,
        })
    }

    fn bands(&self) -> u8 {
        // At most MAX_BANDS (checked in `new`).
        (usize::from(DEFAULT_BANDS) + self.classes.len()) as u8
    }
}

/// The kernel's state of the device, against the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetemState {
    /// The device.
    pub dev: String,
    /// Which port the plan matches.
    pub port_match: PortMatch,
    /// The root qdisc (`kind handle`), if not the kernel's default.
    pub root: Option<String>,
    /// The root is the one sshlab makes.
    pub ours: bool,
    /// One per profile.
    pub rows: Vec<Row>,
    /// Filters and netem qdiscs under the root that no profile asks for.
    pub extra: Vec<String>,
    /// Everything matches the plan, and nothing else is there (`back` included).
    pub ready: bool,
    /// The lab's way back (`netem show` without `--dev`, when a profile is shaped both ways
    /// or an earlier one left its qdiscs there): the MCP VM's link, source ports ([`lab`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back: Option<Box<NetemState>>,
}

/// One profile, as found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The plan's class.
    pub want: Class,
    /// The netem qdisc found on its band.
    pub have: Option<Netem>,
    /// A u32 filter sends the port to the band.
    pub filter: bool,
    /// All matches.
    pub ok: bool,
}

/// Whether what the kernel has is what is wanted. The distribution table is not dumped
/// back by the kernel, so it cannot be compared; a seed is compared when one is wanted (the
/// kernels that keep one dump a random one otherwise).
fn same(have: &Netem, want: &Netem) -> bool {
    let close = |x: Option<f64>, y: Option<f64>| (x.unwrap_or(0.0) - y.unwrap_or(0.0)).abs() < 1e-3;
    have.delay_ms == want.delay_ms
        && have.jitter_ms == want.jitter_ms
        && close(Some(have.loss_percent), Some(want.loss_percent))
        && close(have.correlation_percent, want.correlation_percent)
        && have.rate_kbit == want.rate_kbit
        && close(have.reorder_percent, want.reorder_percent)
        && close(have.duplicate_percent, want.duplicate_percent)
        && close(have.corrupt_percent, want.corrupt_percent)
        && (want.seed.is_none() || have.seed == want.seed)
}

/// The plan's classes whose jitter will reorder packets: netem gives each packet its own
/// random delay, so one can overtake another, unless a rate limit queues them in order (or
/// reordering is what the profile asks for).
pub fn reordered_by_jitter(plan: &NetemPlan) -> Vec<u16> {
    plan.classes
        .iter()
        .filter(|c| jitter_reorders(&c.netem))
        .map(|c| c.port)
        .collect()
}

fn jitter_reorders(n: &Netem) -> bool {
    n.jitter_ms > 0 && n.rate_kbit.is_none() && n.reorder_percent.is_none_or(|r| r <= 0.0)
}

/// The note for [`reordered_by_jitter`], if any class is.
fn jitter_note(plan: &NetemPlan) -> Option<String> {
    let ports = reordered_by_jitter(plan);
    (!ports.is_empty()).then(|| {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!(
            "note: jitter without rate_kbit reorders packets on {} (netem delays each packet \
             by its own random amount); give a profile rate_kbit to keep its packets in order",
            ports.join(", ")
        )
    })
}

fn ifindex(dev: &str) -> Result<i32, Error> {
    nix::net::if_::if_nametoindex(dev)
        .ok()
        .and_then(|i| i32::try_from(i).ok())
        .ok_or_else(|| Error::NoSuchDevice {
            dev: dev.to_owned(),
        })
}

/// Reads the device's qdiscs and filters and compares them with the plan.
pub fn show(plan: &NetemPlan) -> Result<NetemState, Error> {
    let mut tc = Tc::open().map_err(Error::Socket)?;
    state(&mut tc, ifindex(&plan.dev)?, plan)
}

fn state(tc: &mut Tc, index: i32, plan: &NetemPlan) -> Result<NetemState, Error> {
    let dump_err = |what| {
        move |source| Error::Dump {
            what,
            dev: plan.dev.clone(),
            source,
        }
    };
    let seq = tc.next_seq();
    let qdiscs: Vec<_> = tc
        .dump(&tc::dump(tc::RTM_GETQDISC, seq, index, 0))
        .map_err(dump_err("qdiscs"))?
        .iter()
        .filter_map(|p| tc::parse_tc(p))
        .filter(|q| q.ifindex == index)
        .collect();
    let root = qdiscs
        .iter()
        .find(|q| q.parent == tc::TC_H_ROOT && q.handle != 0);
    let ours = root.is_some_and(|r| r.kind == "prio" && r.handle == tc::handle(ROOT_MAJOR, 0));
    let filters = if ours {
        let seq = tc.next_seq();
        let parent = tc::handle(ROOT_MAJOR, 0);
        tc.dump(&tc::dump(tc::RTM_GETTFILTER, seq, index, parent))
            .map_err(dump_err("filters"))?
            .iter()
            .filter_map(|p| tc::parse_tc(p))
            .filter(|f| f.kind == "u32")
            .filter_map(|f| tc::parse_u32_port_filter(&f.options))
            .collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Row> = plan
        .classes
        .iter()
        .map(|c| {
            let class = tc::handle(ROOT_MAJOR, c.minor);
            let have = ours
                .then(|| {
                    qdiscs.iter().find(|q| {
                        q.kind == "netem" && q.parent == class && q.handle == tc::handle(c.major, 0)
                    })
                })
                .flatten()
                .and_then(|q| tc::parse_netem(&q.options));
            let filter = filters.contains(&(plan.port_match, c.port, class));
            let ok = filter && have.as_ref().is_some_and(|h| same(h, &c.netem));
            Row {
                want: c.clone(),
                have,
                filter,
                ok,
            }
        })
        .collect();
    // What is under the root but not in the plan (a netem fault's port, put back by
    // applying the lab's own profiles): the device is not as planned until it is gone.
    let planned_filter = |(m, port, class): &(PortMatch, u16, u32)| {
        plan.classes.iter().any(|c| {
            *m == plan.port_match && *port == c.port && *class == tc::handle(ROOT_MAJOR, c.minor)
        })
    };
    let mut extra: Vec<String> = filters
        .iter()
        .filter(|f| !planned_filter(f))
        .map(|(m, port, class)| {
            format!(
                "a filter for {} {port} to {}",
                m.as_str(),
                tc::fmt_handle(*class)
            )
        })
        .collect();
    if ours {
        extra.extend(
            qdiscs
                .iter()
                .filter(|q| q.kind == "netem")
                .filter(|q| {
                    !plan.classes.iter().any(|c| {
                        q.parent == tc::handle(ROOT_MAJOR, c.minor)
                            && q.handle == tc::handle(c.major, 0)
                    })
                })
                .map(|q| {
                    format!(
                        "a netem qdisc {} on {}",
                        tc::fmt_handle(q.handle),
                        tc::fmt_handle(q.parent)
                    )
                }),
        );
    }
    let ready = ours && rows.iter().all(|r| r.ok) && extra.is_empty();
    Ok(NetemState {
        dev: plan.dev.clone(),
        port_match: plan.port_match,
        root: root.map(|r| format!("{} {}", r.kind, tc::fmt_handle(r.handle))),
        ours,
        rows,
        extra,
        ready,
        back: None,
    })
}

/// Installs the plan on its device. Returns what it did (empty when nothing was needed).
pub fn apply(plan: &NetemPlan) -> Result<Vec<String>, Error> {
    let mut tc = Tc::open().map_err(Error::Socket)?;
    let index = ifindex(&plan.dev)?;
    let current = state(&mut tc, index, plan)?;
    if current.ready {
        return Ok(Vec::new());
    }
    let mut changes = Vec::new();
    if current.ours {
        delete_root(&mut tc, index, &plan.dev)?;
        changes.push(format!(
            "replaced the previous sshlab qdiscs on {}",
            plan.dev
        ));
    } else if let Some(root) = &current.root {
        let (kind, handle) = root.split_once(' ').unwrap_or((root.as_str(), ""));
        return Err(Error::ForeignRoot {
            dev: plan.dev.clone(),
            kind: kind.to_owned(),
            handle: handle.to_owned(),
        });
    }
    let seq = tc.next_seq();
    tc.request(&tc::add_prio_root(seq, index, ROOT_MAJOR, plan.bands()))
        .map_err(|source| match missing(&source) {
            true => Error::MissingModule {
                module: "sch_prio",
                also: " (netem also needs sch_netem)",
            },
            false => Error::AddRoot {
                dev: plan.dev.clone(),
                source,
            },
        })?;
    if let Err(e) =
        build_children(&mut tc, index, plan).and_then(|()| seeds_kept(&mut tc, index, plan))
    {
        // Leave nothing half-shaped behind; the first error is the one to report.
        let _ = delete_root(&mut tc, index, &plan.dev);
        return Err(e);
    }
    changes.push(format!(
        "{}: prio root {}: with {} netem classes, u32 filters on {}",
        plan.dev,
        ROOT_MAJOR,
        plan.classes.len(),
        plan.port_match.as_str()
    ));
    changes.extend(jitter_note(plan));
    Ok(changes)
}

/// A seed the kernel did not keep (older kernels ignore the attribute) is refused: the runs
/// would not repeat, whatever the profile says.
fn seeds_kept(tc: &mut Tc, index: i32, plan: &NetemPlan) -> Result<(), Error> {
    if plan.classes.iter().all(|c| c.netem.seed.is_none()) {
        return Ok(());
    }
    let now = state(tc, index, plan)?;
    match now
        .rows
        .iter()
        .find(|r| r.want.netem.seed.is_some() && r.have.and_then(|h| h.seed) != r.want.netem.seed)
    {
        Some(r) => Err(Error::SeedNotKept {
            dev: plan.dev.clone(),
            port: r.want.port,
        }),
        None => Ok(()),
    }
}

/// ENOENT or EOPNOTSUPP on a qdisc add whose parent exists: the kernel has no such qdisc.
fn missing(e: &KernelError) -> bool {
    matches!(
        e.errno,
        nix::errno::Errno::ENOENT | nix::errno::Errno::EOPNOTSUPP
    )
}

fn build_children(tc: &mut Tc, index: i32, plan: &NetemPlan) -> Result<(), Error> {
    for c in &plan.classes {
        let seq = tc.next_seq();
        let msg = tc::add_netem(
            seq,
            index,
            tc::handle(ROOT_MAJOR, c.minor),
            c.major,
            &c.netem,
        );
        tc.request(&msg).map_err(|source| match missing(&source) {
            true => Error::MissingModule {
                module: "sch_netem",
                also: "",
            },
            false => Error::AddNetem {
                dev: plan.dev.clone(),
                port: c.port,
                source,
            },
        })?;
    }
    install_filters(tc, index, tc::handle(ROOT_MAJOR, 0), plan)
}

/// Adds one u32 port filter per class under `parent` (the prio root, or any classful qdisc
/// with the same class numbers: the tests use htb, which this machine's kernel has).
pub fn install_filters(
    tc: &mut Tc,
    index: i32,
    parent: u32,
    plan: &NetemPlan,
) -> Result<(), Error> {
    for c in &plan.classes {
        let seq = tc.next_seq();
        let msg = tc::add_u32_port_filter(
            seq,
            index,
            parent,
            FILTER_PRIO,
            plan.port_match,
            c.port,
            tc::handle(ROOT_MAJOR, c.minor),
        );
        tc.request(&msg).map_err(|source| Error::AddFilter {
            dev: plan.dev.clone(),
            port: c.port,
            source,
        })?;
    }
    Ok(())
}

/// The qdisc modules netem needs (`sch_prio`, `sch_netem`) that this kernel lacks, probed
/// on `dev` by adding each as the device's root qdisc and deleting it again.
///
/// [`apply`] stops at the first module it misses (prio, which it adds first), so its error
/// cannot say whether netem is missing too; callers that record why the lab runs unshaped
/// (`vm up`) probe both to name every missing module. The device must have no root qdisc of
/// its own (a fresh link); the probe leaves none behind.
pub fn missing_modules(dev: &str) -> Result<Vec<&'static str>, Error> {
    let mut tc = Tc::open().map_err(Error::Socket)?;
    let index = ifindex(dev)?;
    let probe = Netem {
        delay_ms: 1,
        ..Netem::default()
    };
    let mut lacking = Vec::new();
    for module in ["sch_prio", "sch_netem"] {
        let seq = tc.next_seq();
        let msg = match module {
            "sch_prio" => tc::add_prio_root(seq, index, ROOT_MAJOR, DEFAULT_BANDS as u8),
            _ => tc::add_netem(seq, index, tc::TC_H_ROOT, ROOT_MAJOR, &probe),
        };
        match tc.request(&msg) {
            Ok(()) => delete_root(&mut tc, index, dev)?,
            Err(e) if missing(&e) => lacking.push(module),
            Err(source) => {
                return Err(Error::AddRoot {
                    dev: dev.to_owned(),
                    source,
                });
            }
        }
    }
    Ok(lacking)
}

/// Removes what [`apply`] made, if it is there. Returns what it did.
pub fn clear(plan: &NetemPlan) -> Result<Vec<String>, Error> {
    let mut tc = Tc::open().map_err(Error::Socket)?;
    let index = ifindex(&plan.dev)?;
    let current = state(&mut tc, index, plan)?;
    if !current.ours {
        return Ok(match current.root {
            Some(r) => vec![format!(
                "left {}'s root qdisc ({r}) alone: not sshlab's",
                plan.dev
            )],
            None => Vec::new(),
        });
    }
    delete_root(&mut tc, index, &plan.dev)?;
    Ok(vec![format!("removed the sshlab qdiscs from {}", plan.dev)])
}

fn delete_root(tc: &mut Tc, index: i32, dev: &str) -> Result<(), Error> {
    let seq = tc.next_seq();
    tc.request(&tc::del_root(seq, index, ROOT_MAJOR))
        .map_err(|source| Error::DeleteRoot {
            dev: dev.to_owned(),
            source,
        })
}

/// Opens a tc socket and resolves a device, for callers of [`install_filters`].
pub fn open(dev: &str) -> Result<(Tc, i32), Error> {
    Ok((Tc::open().map_err(Error::Socket)?, ifindex(dev)?))
}

impl fmt::Display for NetemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let root = self.root.as_deref().unwrap_or("kernel default");
        let jitter = self
            .rows
            .iter()
            .filter(|r| jitter_reorders(&r.want.netem))
            .count();
        writeln!(
            f,
            "{}: root {root}{}; filters match {}",
            self.dev,
            if self.ours { " (sshlab)" } else { "" },
            self.port_match.as_str()
        )?;
        match &self.back {
            Some(_) => writeln!(
                f,
                "shaped: this device's egress, and the profiles shaped both ways on the way \
                 back too (below)"
            )?,
            None => writeln!(
                f,
                "shaped: this device's egress only, so each delay is added once per round trip"
            )?,
        }
        writeln!(
            f,
            "{:<6} {:<6} {:<26} {:<26} {:<7} state",
            "port", "class", "profile", "kernel", "filter"
        )?;
        for r in &self.rows {
            let have = r.have.as_ref().map_or_else(|| "-".to_owned(), describe);
            writeln!(
                f,
                "{:<6} 1:{:<4x} {:<26} {:<26} {:<7} {}",
                r.want.port,
                r.want.minor,
                describe(&r.want.netem),
                have,
                if r.filter { "yes" } else { "no" },
                if r.ok { "ok" } else { "MISSING" }
            )?;
        }
        if self
            .rows
            .iter()
            .any(|r| r.want.netem.distribution.is_some())
        {
            writeln!(
                f,
                "distribution: sent with each qdisc; the kernel does not report it back"
            )?;
        }
        for e in &self.extra {
            writeln!(f, "not in the profiles: {e}")?;
        }
        if jitter > 0 {
            writeln!(
                f,
                "{jitter} profile(s) with jitter and no rate_kbit: their packets get reordered"
            )?;
        }
        if let Some(back) = &self.back {
            writeln!(f, "back (the target's replies):")?;
            writeln!(f, "{back}")?;
        }
        write!(
            f,
            "{}",
            if self.ready {
                "applied"
            } else {
                "not applied (sshlab netem apply)"
            }
        )
    }
}

fn describe(n: &Netem) -> String {
    let mut s = format!("{}ms ±{}ms", n.delay_ms, n.jitter_ms);
    if n.loss_percent > 0.0 {
        s.push_str(&format!(
            " loss {}%",
            (n.loss_percent * 100.0).round() / 100.0
        ));
    }
    if let Some(c) = n.correlation_percent {
        s.push_str(&format!(" corr {}%", (c * 100.0).round() / 100.0));
    }
    if let Some(r) = n.rate_kbit {
        s.push_str(&format!(" {r}kbit"));
    }
    if let Some(d) = n.distribution {
        s.push_str(&format!(" {}", d.name()));
    }
    for (name, p) in [
        ("reorder", n.reorder_percent),
        ("dup", n.duplicate_percent),
        ("corrupt", n.corrupt_percent),
    ] {
        if let Some(p) = p.filter(|p| *p > 0.0) {
            s.push_str(&format!(" {name} {}%", (p * 100.0).round() / 100.0));
        }
    }
    if let Some(seed) = n.seed {
        s.push_str(&format!(" seed {seed}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> sshlab_core::Lab {
        sshlab_core::Lab::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).unwrap()
    }

    #[test]
    fn plan_defaults_to_the_targets_tap_and_dport() {
        let lab = lab();
        let plan = NetemPlan::new(&lab.topology, &lab.netem, None, None).unwrap();
        assert_eq!(plan.dev, "sshtap2");
        assert_eq!(plan.port_match, PortMatch::Dport);
        assert_eq!(plan.classes.len(), 7);
        assert_eq!(plan.bands(), 10);
        let first = &plan.classes[0];
        assert_eq!((first.port, first.minor, first.major), (2322, 4, 0x10));
        assert_eq!((first.netem.delay_ms, first.netem.jitter_ms), (100, 10));
        let second = &plan.classes[1];
        assert_eq!((second.port, second.netem.loss_percent), (2323, 5.0));
    }

    #[test]
    fn plan_validates_the_device_name() {
        let lab = lab();
        let err = NetemPlan::new(&lab.topology, &lab.netem, Some("bad/name"), None).unwrap_err();
        assert!(err.to_string().contains("bad/name"), "{err}");
    }

    #[test]
    fn too_many_profiles_are_refused() {
        let lab = lab();
        let mut profiles = lab.netem.clone();
        let p = profiles.profiles[0].clone();
        profiles.profiles = vec![p; 14];
        let err = NetemPlan::new(&lab.topology, &profiles, None, None).unwrap_err();
        assert!(
            matches!(err, Error::TooManyProfiles { count: 14, .. }),
            "{err}"
        );
    }

    #[test]
    fn missing_module_message_names_the_module() {
        let e = Error::MissingModule {
            module: "sch_netem",
            also: "",
        };
        assert_eq!(
            e.to_string(),
            "Kernel lacks sch_netem: run `modprobe sch_netem`"
        );
    }
}
