//! Where the live dashboard listens, agreed on by the agent that serves it (`sshlab-agent run
//! --dashboard`, `serve --dashboard`) and the host tool that forwards it (`sshlab run
//! --dashboard`): the address syntax, the default, and the rule that a dashboard listens on
//! loopback unless the user says otherwise. Anyone who reaches the page can watch the run and
//! stop it, so a non-loopback address is refused without [`PUBLIC_FLAG`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The default port (k6's web dashboard's, which users of load tools already know).
pub const DEFAULT_PORT: u16 = 5665;

/// The default address: loopback, [`DEFAULT_PORT`].
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_PORT);

/// The flag that allows a non-loopback address.
pub const PUBLIC_FLAG: &str = "--dashboard-public";

/// The page.
pub const PAGE_PATH: &str = "/";
/// Server-sent events: a frame of the page a second, then the final report.
pub const EVENTS_PATH: &str = "/events";
/// The agent's Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// `POST`: stop the run (as Ctrl-C does).
pub const STOP_PATH: &str = "/stop";
/// The last run's report.html.
pub const REPORT_PATH: &str = "/report.html";

/// A dashboard address that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// Not `PORT`, `IP:PORT` or `[IPv6]:PORT`.
    #[error("dashboard address {0:?}: expected PORT, IP:PORT or [IPv6]:PORT")]
    Syntax(String),
    /// Not loopback, and not allowed to be.
    #[error(
        "dashboard address {0} is not a loopback address: anyone who can reach it can watch \
         the run and stop it; add {PUBLIC_FLAG} to serve it there anyway"
    )]
    NotLoopback(SocketAddr),
}

/// Parses `PORT` (on loopback), `IP:PORT` or `[IPv6]:PORT`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, AddrError> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| AddrError::Syntax(s.to_owned()))
}

/// `addr`, when it may be used: loopback, or anything with `public`.
pub fn check(addr: SocketAddr, public: bool) -> Result<SocketAddr, AddrError> {
    if public || addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(AddrError::NotLoopback(addr))
    }
}

/// The URL to open for a dashboard listening on `addr` (an unspecified address is shown as
/// loopback, which reaches it from the same machine).
pub fn url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/", SocketAddr::new(ip, addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_loopback_and_others_need_the_flag() {
        assert_eq!(parse_addr("8080").unwrap().to_string(), "127.0.0.1:8080");
        assert_eq!(parse_addr("[::1]:1").unwrap().to_string(), "[::1]:1");
        assert!(matches!(
            parse_addr("localhost:1"),
            Err(AddrError::Syntax(_))
        ));
        assert!(matches!(parse_addr("1.2.3.4"), Err(AddrError::Syntax(_))));
        let lan = parse_addr("0.0.0.0:5665").unwrap();
        let e = check(lan, false).unwrap_err();
        assert!(e.to_string().contains(PUBLIC_FLAG), "{e}");
        assert_eq!(check(lan, true), Ok(lan));
        assert_eq!(check(DEFAULT_ADDR, false), Ok(DEFAULT_ADDR));
        assert!(check(parse_addr("[::1]:9").unwrap(), false).is_ok());
        assert_eq!(url(lan), "http://127.0.0.1:5665/");
    }
}
