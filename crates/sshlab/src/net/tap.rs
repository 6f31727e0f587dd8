//! Persistent TAP devices, made with the tun driver's ioctls on `/dev/net/tun`.
//!
//! The kernel refuses to create tun/tap devices over rtnetlink ("tun/tap creation via rtnetlink
//! is not supported"), so this is the one part of `net up` that is not netlink. The `tun` crate
//! cannot make a multi-queue TAP (it refuses any queue count but one), so the four ioctls are
//! declared here with `nix`'s ioctl macros.
//!
//! [`ensure`] opens `/dev/net/tun`, attaches with `TUNSETIFF` (creating the device if it does
//! not exist), sets the owner with `TUNSETOWNER`, marks it persistent with `TUNSETPERSIST` and
//! closes the descriptor. The device then outlives the process, owned by the VM's user, until
//! `net down` deletes it over netlink; no `Drop` tears anything down. The device is created in
//! the network namespace of the thread that opened `/dev/net/tun`.

use std::ffi::c_int;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use super::Error;

/// The tun driver's clone device.
const TUN_DEVICE: &str = "/dev/net/tun";

nix::ioctl_write_ptr_bad!(
    /// `TUNSETIFF`: attach the descriptor to the named device, creating it if needed.
    tun_set_iff, libc::TUNSETIFF, libc::ifreq);
nix::ioctl_write_int_bad!(
    /// `TUNSETOWNER`: the uid allowed to attach to the device.
    tun_set_owner, libc::TUNSETOWNER);
nix::ioctl_write_int_bad!(
    /// `TUNSETPERSIST`: keep the device after its last descriptor closes.
    tun_set_persist, libc::TUNSETPERSIST);

/// What a TAP must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// Interface name (validated).
    pub name: String,
    /// `IFF_MULTI_QUEUE`: set when the VM has more than one vCPU (one queue per vCPU), as
    /// microvm.nix's qemu runner expects (`queues=<vcpu>`); the kernel refuses to attach a
    /// multi-queue VM to a single-queue TAP and vice versa.
    pub multi_queue: bool,
    /// `TUNSETOWNER`: the user that may attach to it (the VM runner), `None` to leave as is.
    pub owner: Option<u32>,
}

impl TapSpec {
    /// The `TUNSETIFF` flags: a TAP (L2), no packet-info header, virtio-net header on (the
    /// hypervisors' virtio-net backends use it for offloads), multi-queue when asked.
    pub fn flags(&self) -> c_int {
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if self.multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        flags
    }
}

/// Creates the TAP, or attaches to the existing one with the same queue mode and rewrites its
/// flags, owner and persistence. Leaves it persistent and closes the descriptor.
pub fn ensure(spec: &TapSpec) -> Result<(), Error> {
    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open(TUN_DEVICE)
        .map_err(Error::OpenTun)?;
    set_iff(&tun, spec)?;
    if let Some(uid) = spec.owner {
        let arg = c_int::try_from(uid).map_err(|_| Error::SetOwner {
            name: spec.name.clone(),
            uid,
            source: nix::Error::EINVAL,
        })?;
        // SAFETY: `tun` is an open /dev/net/tun descriptor attached to a device; TUNSETOWNER
        // takes its argument by value (a uid), no memory is passed to the kernel.
        unsafe { tun_set_owner(tun.as_raw_fd(), arg) }.map_err(|source| Error::SetOwner {
            name: spec.name.clone(),
            uid,
            source,
        })?;
    }
    // SAFETY: as above; TUNSETPERSIST takes 0 or 1 by value.
    unsafe { tun_set_persist(tun.as_raw_fd(), 1) }.map_err(|source| Error::SetPersist {
        name: spec.name.clone(),
        source,
    })?;
    Ok(())
}

fn set_iff(tun: &File, spec: &TapSpec) -> Result<(), Error> {
    // SAFETY: `ifreq` is a plain C struct (a name array and a union of integers/arrays) for
    // which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // The name was validated (1..=15 bytes, no NUL), so the last byte stays NUL.
    for (dst, src) in req.ifr_name.iter_mut().zip(spec.name.bytes()) {
        *dst = src as libc::c_char;
    }
    // The flags are all below 0x8000, so they fit the C `short` without changing sign.
    req.ifr_ifru.ifru_flags = spec.flags() as libc::c_short;
    // SAFETY: `tun` is an open /dev/net/tun descriptor and `req` a valid, initialised ifreq
    // that lives across the call; the kernel reads it and writes back the same struct.
    unsafe { tun_set_iff(tun.as_raw_fd(), &req) }.map_err(|source| Error::CreateTap {
        name: spec.name.clone(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_the_queue_mode() {
        let mut spec = TapSpec {
            name: "sshtap0".into(),
            multi_queue: false,
            owner: None,
        };
        assert_eq!(spec.flags(), 0x0002 | 0x1000 | 0x4000);
        spec.multi_queue = true;
        assert_eq!(spec.flags(), 0x0002 | 0x1000 | 0x4000 | 0x0100);
    }
}
