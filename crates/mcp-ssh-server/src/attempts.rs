//! `ssh_connect` attempts in flight, bounded per client and per remote address.
//!
//! An attempt is the costly part of `ssh_connect`: decoding a private key (up to a second of
//! CPU for an allowed 256-round key), then TCP, the SSH handshake and authentication. It
//! begins only after the cheap checks (arguments, the key's format and work factor), and a
//! client (an MCP session, or a stateless client's identity) has at most
//! [`ConnectAttempts::max_per_client`] in flight, an address (an IPv6 /64) at most
//! [`ConnectAttempts::max_per_address`], whatever sessions or tokens it uses; past either, the
//! call fails at once, holding nothing. With keys decoded before a pool slot is reserved
//! (`tools::connect`), callers whose credentials cannot be decoded never hold a slot: before,
//! twenty concurrent connects with 256-round keys held all ten slots of a target, and a client
//! with the right password was refused "pool exhausted" on 15 of 20 attempts.

use std::net::IpAddr;

use crate::per_key::{Held, PerKey};

/// Why an attempt could not begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooMany {
    /// The client has this many in flight, its limit.
    #[error(
        "this client already has {0} ssh_connect calls in flight (--connect-attempts-per-client); \
         wait for one to finish"
    )]
    Client(usize),
    /// The address has this many in flight, its limit.
    #[error(
        "this address already has {0} ssh_connect calls in flight \
         (--connect-attempts-per-address); wait for one to finish"
    )]
    Address(usize),
}

/// The attempts in flight.
#[derive(Debug)]
pub struct ConnectAttempts {
    per_client: PerKey<String>,
    per_address: PerKey<IpAddr>,
    /// Attempts one client may have in flight.
    pub max_per_client: usize,
    /// Attempts one address may have in flight.
    pub max_per_address: usize,
}

/// One attempt in flight; it ends when dropped.
#[derive(Debug)]
pub struct Attempt {
    _client: Held<String>,
    _address: Held<IpAddr>,
}

impl ConnectAttempts {
    /// None in flight yet.
    pub fn new(max_per_client: usize, max_per_address: usize) -> Self {
        Self {
            per_client: PerKey::default(),
            per_address: PerKey::default(),
            max_per_client,
            max_per_address,
        }
    }

    /// Begins an attempt of `client` at `address` (its network), unless either has its limit
    /// in flight.
    pub fn begin(&self, client: &str, address: IpAddr) -> Result<Attempt, TooMany> {
        let address = self
            .per_address
            .hold(address, self.max_per_address)
            .map_err(TooMany::Address)?;
        let client = self
            .per_client
            .hold(client.to_owned(), self.max_per_client)
            .map_err(TooMany::Client)?;
        Ok(Attempt {
            _client: client,
            _address: address,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_and_addresses_are_bounded_separately() {
        let a = ConnectAttempts::new(2, 3);
        let here = IpAddr::from([127, 0, 0, 1]);
        let one = a.begin("mcp:a", here).expect("room");
        let _two = a.begin("mcp:a", here).expect("room");
        assert_eq!(a.begin("mcp:a", here).err(), Some(TooMany::Client(2)));
        let _three = a.begin("mcp:b", here).expect("another client");
        assert_eq!(a.begin("mcp:c", here).err(), Some(TooMany::Address(3)));
        assert!(a.begin("mcp:c", IpAddr::from([127, 0, 0, 2])).is_ok());
        drop(one);
        assert!(
            a.begin("mcp:c", here).is_ok(),
            "an ended attempt makes room"
        );
    }
}
