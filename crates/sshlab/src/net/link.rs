//! Reading links and addresses back from the kernel over rtnetlink, in the plain shape the rest
//! of `net` compares against the plan.
//!
//! The tun driver reports its settings in `IFLA_LINKINFO`/`IFLA_INFO_DATA` (`IFLA_TUN_*`);
//! netlink-packet-route keeps those as raw attributes, decoded here.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use netlink_packet_core::Nla;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoTun, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::Handle;
use serde::Serialize;

use super::Error;

// uapi/linux/if_link.h, enum IFLA_TUN_*.
const IFLA_TUN_OWNER: u16 = 1;
const IFLA_TUN_TYPE: u16 = 3;
const IFLA_TUN_PI: u16 = 4;
const IFLA_TUN_VNET_HDR: u16 = 5;
const IFLA_TUN_PERSIST: u16 = 6;
const IFLA_TUN_MULTI_QUEUE: u16 = 7;
/// `IFLA_TUN_TYPE` value of a TAP (`IFF_TAP`).
const TUN_TYPE_TAP: u8 = 2;

/// One link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND` (`bridge`, `tun`, `veth`...), absent for plain devices.
    pub kind: Option<String>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Index of the bridge it is a port of.
    pub master: Option<u32>,
    /// The tun driver's settings, for tun/tap devices.
    pub tun: Option<TunInfo>,
}

/// `IFLA_TUN_*` of a tun/tap device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct TunInfo {
    /// A TAP (L2), not a TUN (L3).
    pub tap: bool,
    /// Packet-info header on (`IFF_NO_PI` not set).
    pub pi: bool,
    /// Virtio-net header on.
    pub vnet_hdr: bool,
    /// Outlives its last descriptor.
    pub persist: bool,
    /// Multi-queue.
    pub multi_queue: bool,
    /// The user allowed to attach, if any.
    pub owner: Option<u32>,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            master: None,
            tun: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Controller(idx) => link.master = Some(*idx),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                            LinkInfo::Data(InfoData::Tun(nlas)) => {
                                link.tun = Some(tun_info(nlas));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if link.kind.as_deref() == Some(&InfoKind::Tun.to_string()) && link.tun.is_none() {
            link.tun = Some(TunInfo::default());
        }
        link
    }

    /// A Linux bridge.
    pub fn is_bridge(&self) -> bool {
        self.kind.as_deref() == Some("bridge")
    }

    /// A tun/tap device (either type).
    pub fn is_tun(&self) -> bool {
        self.kind.as_deref() == Some("tun")
    }
}

fn tun_info(nlas: &[InfoTun]) -> TunInfo {
    let mut info = TunInfo::default();
    for nla in nlas {
        let mut value = vec![0; nla.value_len()];
        nla.emit_value(&mut value);
        let byte = value.first().copied().unwrap_or(0);
        match nla.kind() {
            IFLA_TUN_OWNER if value.len() >= 4 => {
                info.owner = Some(u32::from_ne_bytes([value[0], value[1], value[2], value[3]]));
            }
            IFLA_TUN_TYPE => info.tap = byte == TUN_TYPE_TAP,
            IFLA_TUN_PI => info.pi = byte != 0,
            IFLA_TUN_VNET_HDR => info.vnet_hdr = byte != 0,
            IFLA_TUN_PERSIST => info.persist = byte != 0,
            IFLA_TUN_MULTI_QUEUE => info.multi_queue = byte != 0,
            _ => {}
        }
    }
    info
}

/// Every link of the namespace.
pub async fn all(handle: &Handle) -> Result<Vec<Link>, Error> {
    let mut stream = handle.link().get().execute();
    let mut links = Vec::new();
    while let Some(msg) = stream.try_next().await.map_err(Error::Dump)? {
        links.push(Link::from_message(&msg));
    }
    Ok(links)
}

/// The link called `name`, if any.
pub async fn by_name(handle: &Handle, name: &str) -> Result<Option<Link>, Error> {
    Ok(all(handle).await?.into_iter().find(|l| l.name == name))
}

/// The IPv4 addresses (with prefix length) on link `index`.
pub async fn ipv4_addresses(handle: &Handle, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, Error> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut out = Vec::new();
    while let Some(msg) = stream.try_next().await.map_err(Error::Dump)? {
        if msg.header.index != index {
            continue;
        }
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let addr = local.or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })
        });
        if let Some(ip) = addr {
            out.push((ip, msg.header.prefix_len));
        }
    }
    Ok(out)
}
