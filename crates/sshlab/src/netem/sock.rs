//! A blocking rtnetlink socket for the tc requests built in [`super::tc`]: send one request and
//! read its acknowledgement (with the kernel's extended-ack message, e.g. "Specified qdisc kind
//! is unknown."), or send a dump request and collect the replies.
//!
//! Blocking on purpose: `netem` sends a dozen requests one after the other and needs no
//! runtime. The socket belongs to the network namespace of the thread that opens it.

use std::fmt;

use netlink_sys::{Socket, protocols::NETLINK_ROUTE};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;

/// The kernel's refusal of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// The errno.
    pub errno: nix::errno::Errno,
    /// The extended-ack message, when the kernel gave one.
    pub message: Option<String>,
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.errno.desc(), self.errno)?;
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

impl KernelError {
    fn io(e: std::io::Error) -> Self {
        Self {
            errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
            message: Some(e.to_string()),
        }
    }
}

/// An open rtnetlink socket with a sequence counter.
#[derive(Debug)]
pub struct Tc {
    socket: Socket,
    seq: u32,
}

impl Tc {
    /// Opens and binds the socket, with extended acks on.
    pub fn open() -> Result<Self, KernelError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(KernelError::io)?;
        socket.bind_auto().map_err(KernelError::io)?;
        // Best effort: without it errors just carry no message.
        let _ = socket.set_ext_ack(true);
        Ok(Self { socket, seq: 1 })
    }

    /// The next sequence number (for the message about to be built).
    pub fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    /// Sends one request built with `seq` = the last [`Tc::next_seq`] and waits for its ack.
    pub fn request(&mut self, msg: &[u8]) -> Result<(), KernelError> {
        self.socket.send(msg, 0).map_err(KernelError::io)?;
        loop {
            let (buf, _) = self.socket.recv_from_full().map_err(KernelError::io)?;
            for (kind, flags, body) in messages(&buf) {
                if kind == NLMSG_ERROR {
                    return ack(flags, body);
                }
            }
        }
    }

    /// Sends a dump request and returns the payloads of every reply.
    pub fn dump(&mut self, msg: &[u8]) -> Result<Vec<Vec<u8>>, KernelError> {
        self.socket.send(msg, 0).map_err(KernelError::io)?;
        let mut out = Vec::new();
        loop {
            let (buf, _) = self.socket.recv_from_full().map_err(KernelError::io)?;
            for (kind, flags, body) in messages(&buf) {
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        ack(flags, body)?;
                        return Ok(out);
                    }
                    _ => out.push(body.to_vec()),
                }
            }
        }
    }
}

/// Splits a receive buffer into (type, flags, payload) messages.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = (u16, u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes(buf[0..4].try_into().ok()?) as usize;
        if len < 16 || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let flags = u16::from_ne_bytes([buf[6], buf[7]]);
        let body = &buf[16..len];
        buf = &buf[len.next_multiple_of(4).min(buf.len())..];
        Some((kind, flags, body))
    })
}

/// Reads an `nlmsgerr`: error code, the echoed request header, then (with `NLM_F_ACK_TLVS`)
/// extended-ack attributes. The kernel echoes only the header on error when extended acks are
/// on (`NLM_F_CAPPED`), which is the mode [`Tc::open`] asks for.
fn ack(flags: u16, body: &[u8]) -> Result<(), KernelError> {
    let code = body.get(0..4).map_or(-libc::EIO, |b| {
        i32::from_ne_bytes(b.try_into().unwrap_or([0; 4]))
    });
    if code == 0 {
        return Ok(());
    }
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 && body.len() >= 20 {
        // The echoed request header says how much of the request was echoed back.
        let echoed_len = u32::from_ne_bytes(body[4..8].try_into().unwrap_or([0; 4])) as usize;
        let capped = flags & 0x100 != 0; // NLM_F_CAPPED
        let skip = if capped { 16 } else { echoed_len.max(16) };
        if let Some(tlvs) = body.get(4 + skip..) {
            message = super::tc::attrs(tlvs)
                .find(|(k, _)| *k == NLMSGERR_ATTR_MSG)
                .map(|(_, v)| String::from_utf8_lossy(v).trim_end_matches('\0').to_owned());
        }
    }
    Err(KernelError {
        errno: nix::errno::Errno::from_raw(-code),
        message,
    })
}
