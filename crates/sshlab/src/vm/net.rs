//! The netns backend's network: one named network namespace per VM, a veth pair per VM whose
//! host end carries the VM's TAP name and is a port of the lab's bridge, and whose inner end
//! (`eth0`) has the VM's address and a default route via the bridge.
//!
//! Links, addresses and routes go over rtnetlink. The named namespaces themselves are made and
//! removed with iproute2's `ip netns add|del` (it also sets up the shared `/run/netns` mount
//! that makes the names usable from other mount namespaces); that is the one shell-out here.
//! Configuring the inner end needs a netlink socket inside the VM's namespace: a short-lived
//! thread enters it with `setns(2)` and runs its own single-threaded runtime.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::net::{self as hostnet, link};
use crate::netns::NETNS_DIR;

/// Name of the VM side of the veth, inside the VM's namespace.
pub const INNER_IFNAME: &str = "eth0";

/// Whether a named namespace exists.
pub fn netns_exists(name: &str) -> bool {
    PathBuf::from(NETNS_DIR).join(name).exists()
}

/// `ip netns add NAME`.
pub fn netns_add(name: &str) -> anyhow::Result<()> {
    crate::netns::validate(name)?;
    run_ip(&["netns", "add", name])
}

/// `ip netns del NAME` (the namespace goes when its last process and mount are gone).
pub fn netns_del(name: &str) -> anyhow::Result<()> {
    run_ip(&["netns", "del", name])
}

fn run_ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (iproute2) to manage named network namespaces")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Opens a named namespace's file (for `setns` or `IFLA_NET_NS_FD`).
pub fn open_netns(name: &str) -> anyhow::Result<File> {
    let path = PathBuf::from(NETNS_DIR).join(name);
    File::open(&path).with_context(|| format!("cannot open {}", path.display()))
}

/// Creates the veth `host_name` <-> `VM eth0`: host end enslaved to `bridge` and up, the other
/// end moved into namespace `netns`, where it gets `ip/prefix`, and a default route via
/// `gateway`, with `lo` up.
pub async fn add_veth(
    handle: &Handle,
    host_name: &str,
    bridge: &str,
    netns: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> anyhow::Result<()> {
    if let Some(l) = link::by_name(handle, host_name).await? {
        bail!(
            "{host_name} already exists (kind {}); the netns backend needs that name for the VM's veth: run `sshlab net down` (TAPs) or `sshlab vm down` first",
            l.kind.as_deref().unwrap_or("none")
        );
    }
    let bridge_link = link::by_name(handle, bridge)
        .await?
        .with_context(|| format!("bridge {bridge} is missing"))?;
    // A temporary peer name (renamed to eth0 inside the VM's namespace).
    let peer = format!("{host_name}p");
    handle
        .link()
        .add(LinkVeth::new(host_name, &peer).build())
        .execute()
        .await
        .with_context(|| format!("cannot create veth {host_name}"))?;
    let host = link::by_name(handle, host_name)
        .await?
        .with_context(|| format!("{host_name} vanished"))?;
    let peer_link = link::by_name(handle, &peer)
        .await?
        .with_context(|| format!("{peer} vanished"))?;
    let ns_file = open_netns(netns)?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(peer_link.index)
                .setns_by_fd(ns_file.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("cannot move {peer} into namespace {netns}"))?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(host.index)
                .controller(bridge_link.index)
                .up()
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("cannot attach {host_name} to {bridge} and set it up"))?;
    let netns_name = netns.to_owned();
    in_netns(&netns_name, move |h| async move {
        configure_inner(&h, &peer, INNER_IFNAME, ip, prefix, gateway).await
    })
}

/// Names the VM's NIC `peer` `name`, gives it `ip/prefix` and a default route via `gateway`,
/// and sets it and lo up.
pub(crate) async fn configure_inner(
    h: &Handle,
    peer: &str,
    name: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> anyhow::Result<()> {
    let lo = link::by_name(h, "lo").await?.context("no lo")?;
    h.link()
        .set(LinkUnspec::new_with_index(lo.index).up().build())
        .execute()
        .await
        .context("cannot set lo up")?;
    let eth = link::by_name(h, peer)
        .await?
        .with_context(|| format!("{peer} not in the VM namespace"))?;
    h.link()
        .set(
            LinkUnspec::new_with_index(eth.index)
                .name(name.to_owned())
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("cannot rename the VM's NIC {peer} to {name}"))?;
    h.address()
        .add(eth.index, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .with_context(|| format!("cannot add {ip}/{prefix}"))?;
    h.link()
        .set(LinkUnspec::new_with_index(eth.index).up().build())
        .execute()
        .await
        .with_context(|| format!("cannot set {name} up"))?;
    h.route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("cannot add the default route via {gateway}"))?;
    Ok(())
}

/// What the VM's namespace looks like: (eth0 up, its IPv4 addresses).
pub fn inner_status(netns: &str) -> anyhow::Result<(bool, Vec<(Ipv4Addr, u8)>)> {
    in_netns(netns, |h| async move {
        match link::by_name(&h, INNER_IFNAME).await? {
            Some(l) => Ok((l.up, link::ipv4_addresses(&h, l.index).await?)),
            None => Ok((false, Vec::new())),
        }
    })
}

/// Deletes link `name` if it is a veth (its peer goes with it).
pub async fn del_veth(handle: &Handle, name: &str) -> anyhow::Result<bool> {
    let links = link::all(handle).await?;
    match links.iter().find(|l| l.name == name) {
        Some(l) if l.kind.as_deref() == Some("veth") => {
            handle
                .link()
                .del(l.index)
                .execute()
                .await
                .with_context(|| format!("cannot delete {name}"))?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Sets link `name` (in the current namespace) up or down: a partition fault on a VM's
/// host-side link.
pub async fn set_link_state(name: &str, up: bool) -> anyhow::Result<()> {
    let handle = hostnet::connect()?;
    let l = link::by_name(&handle, name)
        .await?
        .with_context(|| format!("no link {name}"))?;
    let msg = LinkUnspec::new_with_index(l.index);
    let msg = if up { msg.up() } else { msg.down() };
    handle
        .link()
        .set(msg.build())
        .execute()
        .await
        .with_context(|| format!("cannot set {name} {}", if up { "up" } else { "down" }))
}

/// The bridge's index and whether `name` is one of its ports.
pub async fn is_port_of(handle: &Handle, name: &str, bridge: &str) -> anyhow::Result<bool> {
    let links = link::all(handle).await?;
    let br = links.iter().find(|l| l.name == bridge && l.is_bridge());
    let port = links.iter().find(|l| l.name == name);
    Ok(matches!((br, port), (Some(b), Some(p)) if p.master == Some(b.index) && p.up))
}

/// Runs `f` with an rtnetlink handle opened inside namespace `netns`, on a thread of its own.
pub fn in_netns<F, Fut, T>(netns: &str, f: F) -> anyhow::Result<T>
where
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    let ns_file = open_netns(netns)?;
    let name = netns.to_owned();
    std::thread::spawn(move || -> anyhow::Result<T> {
        nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("cannot enter network namespace {name}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let h = hostnet::connect()?;
            f(h).await
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netlink thread for {netns} panicked"))?
}
