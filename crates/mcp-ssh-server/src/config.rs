//! Configuration: command-line flags, an optional TOML file, and the two limit profiles.
//!
//! Precedence, lowest first: the profile's defaults, then the TOML file, then explicit flags.
//! `Opts` only describes what the user typed; [`Config::resolve`] turns it into the one
//! resolved value the rest of the server reads, so no other module looks at flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::listener::HttpLimits;

/// Errors while building the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said, with the offending key and line.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting `{key}`: {message}")]
    Invalid {
        /// The setting's name.
        key: &'static str,
        /// Why it is refused.
        message: String,
    },
}

/// Named limit profiles from the load-testing guide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// 10 pooled connections per target, 100 requests/min per client.
    #[default]
    Normal,
    /// 20 pooled connections per target, 500 requests/min per client (the guide's "5x normal").
    Loadtest,
}

/// Command-line flags of `mcp-ssh-server`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mcp-ssh-server",
    version,
    about = "MCP server that runs allowlisted commands over pooled SSH connections"
)]
pub struct Opts {
    /// Address to listen on.
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Optional TOML config file (same keys as the flags, with underscores).
    #[arg(long, env = "MCP_SSH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Limit profile.
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// Pooled SSH connections allowed per user@host:port.
    #[arg(long)]
    pub pool_max_per_target: Option<usize>,
    /// SSH connections allowed in total (all targets).
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// tools/call and other requests allowed per minute per client (0 = unlimited).
    #[arg(long)]
    pub rate_limit_per_min: Option<u32>,
    /// Requests allowed per minute from one remote address, whatever sessions or bearer
    /// tokens it uses (0 = unlimited).
    #[arg(long)]
    pub rate_limit_per_address_per_min: Option<u32>,
    /// Requests allowed per minute for the whole server (0 = unlimited).
    #[arg(long)]
    pub global_rate_limit_per_min: Option<u32>,
    /// ssh_connect calls one client (MCP session, bearer token) may have in flight.
    #[arg(long)]
    pub connect_attempts_per_client: Option<usize>,
    /// ssh_connect calls one remote address may have in flight, whatever sessions or tokens
    /// it uses.
    #[arg(long)]
    pub connect_attempts_per_address: Option<usize>,
    /// Seconds an idle pooled connection is kept.
    #[arg(long)]
    pub pool_idle_timeout_s: Option<u64>,
    /// Seconds between health checks of idle pooled connections.
    #[arg(long)]
    pub health_check_interval_s: Option<u64>,
    /// Milliseconds ssh_connect waits for a free pool slot before failing.
    #[arg(long)]
    pub pool_wait_ms: Option<u64>,
    /// Seconds an idle MCP session (and the SSH sessions it owns) lives.
    #[arg(long)]
    pub session_timeout_s: Option<u64>,
    /// OpenSSH known_hosts file used to check host keys.
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,
    /// Extra allowed browser Origin (repeatable); localhost origins are always allowed.
    #[arg(long = "allowed-origin")]
    pub allowed_origins: Vec<String>,
    /// MCP sessions (2025 era) open at once.
    #[arg(long)]
    pub max_mcp_sessions: Option<usize>,
    /// MCP sessions (2025 era) one remote address may hold open at once.
    #[arg(long)]
    pub max_mcp_sessions_per_address: Option<usize>,
    /// MiB of command output the server holds at once, all commands together (a command
    /// that would pass it fails with a clear error).
    #[arg(long)]
    pub max_output_memory_mb: Option<usize>,
    /// HTTP connections served with keep-alive at once (more get one request each, a few
    /// at a time, then are closed on arrival).
    #[arg(long)]
    pub http_max_connections: Option<usize>,
    /// HTTP connections one remote address (an IPv6 /64) may hold at once, overflow ones
    /// included.
    #[arg(long)]
    pub http_max_connections_per_address: Option<usize>,
    /// Milliseconds a client has to send a request head (also how long an idle kept-alive
    /// connection stays open).
    #[arg(long)]
    pub http_header_timeout_ms: Option<u64>,
    /// Longest pause, in milliseconds, between the parts of a request body.
    #[arg(long)]
    pub http_body_timeout_ms: Option<u64>,
    /// Milliseconds a write to a client may stall (a client that stops reading its response
    /// is cut off).
    #[arg(long)]
    pub http_write_timeout_ms: Option<u64>,
    /// The slowest, in KiB/s, a client may read a response of 64 KiB or more: it has the write
    /// timeout plus the response's size at this rate, then it is cut off (default 64; 0: no
    /// bound).
    #[arg(long)]
    pub http_min_send_rate_kib: Option<u64>,
    /// Milliseconds in-flight requests have to finish after SIGTERM/SIGINT; then running
    /// commands are sent SIGTERM, their calls answered with an error, and every SSH connection
    /// is closed (default 3000).
    #[arg(long)]
    pub shutdown_grace_ms: Option<u64>,
}

/// The TOML file's schema: every key optional, same meaning as the flag of the same name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<SocketAddr>,
    profile: Option<Profile>,
    pool_max_per_target: Option<usize>,
    max_connections: Option<usize>,
    rate_limit_per_min: Option<u32>,
    rate_limit_per_address_per_min: Option<u32>,
    global_rate_limit_per_min: Option<u32>,
    connect_attempts_per_client: Option<usize>,
    connect_attempts_per_address: Option<usize>,
    pool_idle_timeout_s: Option<u64>,
    health_check_interval_s: Option<u64>,
    pool_wait_ms: Option<u64>,
    session_timeout_s: Option<u64>,
    known_hosts: Option<PathBuf>,
    allowed_origins: Option<Vec<String>>,
    max_mcp_sessions: Option<usize>,
    max_mcp_sessions_per_address: Option<usize>,
    max_output_memory_mb: Option<usize>,
    http_max_connections: Option<usize>,
    http_max_connections_per_address: Option<usize>,
    http_header_timeout_ms: Option<u64>,
    http_body_timeout_ms: Option<u64>,
    http_write_timeout_ms: Option<u64>,
    http_min_send_rate_kib: Option<u64>,
    shutdown_grace_ms: Option<u64>,
}

/// Pool and rate limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections per user@host:port.
    pub pool_max_per_target: usize,
    /// Connections in total.
    pub max_connections: usize,
    /// Requests per minute per client; `None` = unlimited.
    pub rate_per_min: Option<u32>,
    /// Requests per minute from one address; `None` = unlimited.
    pub address_rate_per_min: Option<u32>,
    /// Requests per minute for the server; `None` = unlimited.
    pub global_rate_per_min: Option<u32>,
    /// ssh_connect calls in flight per client.
    pub connect_attempts_per_client: usize,
    /// ssh_connect calls in flight per address.
    pub connect_attempts_per_address: usize,
    /// How long ssh_connect waits for a pool slot.
    pub pool_wait: Duration,
    /// Idle pooled connections older than this are closed.
    pub pool_idle_timeout: Duration,
    /// Period of idle-connection health checks.
    pub health_check_interval: Duration,
    /// Idle MCP sessions (and their SSH sessions) are ended after this.
    pub session_timeout: Duration,
    /// MCP sessions (2025 era) open at once.
    pub max_mcp_sessions: usize,
    /// MCP sessions (2025 era) one address may hold.
    pub max_mcp_sessions_per_address: usize,
    /// Bytes of command output held at once, server-wide.
    pub max_output_memory: usize,
    /// The HTTP side's connection cap and timeouts.
    pub http: HttpLimits,
}

impl Profile {
    /// How many clients fill the server's limits: an address gets this fraction of them.
    /// `loadtest`: 1, since sshlab-agent's 1,000 workers (one HTTP connection and one MCP
    /// session each) all come from one address. `normal`: 10.
    fn address_share(self) -> usize {
        match self {
            Profile::Normal => 10,
            Profile::Loadtest => 1,
        }
    }

    /// An address's share of a server-wide cap: [`Profile::address_share`] of it, but at
    /// least 16 (or the whole cap, when that is smaller), so a small server still takes a
    /// few clients from one address.
    fn share_of(self, cap: usize) -> usize {
        (cap / self.address_share()).max(cap.min(16))
    }
}

impl Limits {
    /// The defaults of a profile.
    pub fn for_profile(profile: Profile) -> Self {
        const MAX_MCP_SESSIONS: usize = 4096;
        let (per_target, total, rate, http) = match profile {
            Profile::Normal => (10, 50, 100, 512),
            Profile::Loadtest => (20, 200, 500, 2048),
        };
        let address_share = profile.address_share();
        let global_rate = rate * 20;
        Self {
            pool_max_per_target: per_target,
            max_connections: total,
            rate_per_min: Some(rate),
            address_rate_per_min: Some(global_rate / address_share as u32),
            global_rate_per_min: Some(global_rate),
            connect_attempts_per_client: 4,
            connect_attempts_per_address: profile.share_of(total),
            pool_wait: Duration::from_millis(2000),
            pool_idle_timeout: Duration::from_secs(300),
            health_check_interval: Duration::from_secs(30),
            session_timeout: Duration::from_secs(1800),
            max_mcp_sessions: MAX_MCP_SESSIONS,
            max_mcp_sessions_per_address: MAX_MCP_SESSIONS / address_share,
            max_output_memory: crate::budget::DEFAULT_MAX,
            http: HttpLimits {
                max_connections: http,
                max_per_address: profile.share_of(http),
                // hyper's own default; it is also how long an idle kept-alive connection
                // stays open, which a load generator's workers may well be between requests.
                header_timeout: Duration::from_secs(30),
                body_timeout: Duration::from_secs(30),
                write_timeout: Duration::from_secs(30),
                min_send_rate: 64 * 1024,
            },
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub bind: SocketAddr,
    /// The profile the limits started from.
    pub profile: Profile,
    /// Limits.
    pub limits: Limits,
    /// known_hosts file for host-key checks (`None`: the user's ~/.ssh/known_hosts).
    pub known_hosts: Option<PathBuf>,
    /// Extra allowed Origins besides localhost.
    pub allowed_origins: Vec<String>,
    /// How long in-flight requests may run on after a stop signal before their commands are
    /// stopped.
    pub shutdown_grace: Duration,
}

/// The default of `--shutdown-grace-ms`.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

impl Config {
    /// Resolve flags and the optional file into one configuration.
    pub fn resolve(opts: &Opts) -> Result<Self, ConfigError> {
        let file = match &opts.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let profile = opts.profile.or(file.profile).unwrap_or_default();
        let mut limits = Limits::for_profile(profile);
        let pick = |flag: Option<u64>, file: Option<u64>| flag.or(file);
        if let Some(n) = opts.pool_max_per_target.or(file.pool_max_per_target) {
            limits.pool_max_per_target = n;
        }
        if let Some(n) = opts.max_connections.or(file.max_connections) {
            limits.max_connections = n;
        }
        if let Some(n) = opts.rate_limit_per_min.or(file.rate_limit_per_min) {
            limits.rate_per_min = (n > 0).then_some(n);
        }
        if let Some(n) = opts
            .global_rate_limit_per_min
            .or(file.global_rate_limit_per_min)
        {
            limits.global_rate_per_min = (n > 0).then_some(n);
        }
        // Unless given, the address's limit follows the server's: its share of whatever the
        // global limit resolved to (none when the server has none).
        limits.address_rate_per_min = match opts
            .rate_limit_per_address_per_min
            .or(file.rate_limit_per_address_per_min)
        {
            Some(n) => (n > 0).then_some(n),
            None => limits
                .global_rate_per_min
                .map(|g| (g / profile.address_share() as u32).max(1)),
        };
        if let Some(n) = opts
            .connect_attempts_per_client
            .or(file.connect_attempts_per_client)
        {
            limits.connect_attempts_per_client = n;
        }
        // Unless given, an address's attempts follow the connection cap (its share of it).
        limits.connect_attempts_per_address = opts
            .connect_attempts_per_address
            .or(file.connect_attempts_per_address)
            .unwrap_or_else(|| profile.share_of(limits.max_connections));
        if let Some(s) = pick(opts.pool_idle_timeout_s, file.pool_idle_timeout_s) {
            limits.pool_idle_timeout = Duration::from_secs(s);
        }
        if let Some(s) = pick(opts.health_check_interval_s, file.health_check_interval_s) {
            limits.health_check_interval = Duration::from_secs(s);
        }
        if let Some(ms) = pick(opts.pool_wait_ms, file.pool_wait_ms) {
            limits.pool_wait = Duration::from_millis(ms);
        }
        if let Some(s) = pick(opts.session_timeout_s, file.session_timeout_s) {
            limits.session_timeout = Duration::from_secs(s);
        }
        if let Some(n) = opts.max_mcp_sessions.or(file.max_mcp_sessions) {
            limits.max_mcp_sessions = n;
        }
        // Unless given, an address's session cap follows the server's (its share of it).
        limits.max_mcp_sessions_per_address = opts
            .max_mcp_sessions_per_address
            .or(file.max_mcp_sessions_per_address)
            .unwrap_or_else(|| profile.share_of(limits.max_mcp_sessions));
        if let Some(mb) = opts.max_output_memory_mb.or(file.max_output_memory_mb) {
            limits.max_output_memory = mb.saturating_mul(1024 * 1024);
        }
        if let Some(n) = opts.http_max_connections.or(file.http_max_connections) {
            limits.http.max_connections = n;
        }
        // The same for HTTP connections.
        limits.http.max_per_address = opts
            .http_max_connections_per_address
            .or(file.http_max_connections_per_address)
            .unwrap_or_else(|| profile.share_of(limits.http.max_connections));
        if let Some(ms) = pick(opts.http_header_timeout_ms, file.http_header_timeout_ms) {
            limits.http.header_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = pick(opts.http_body_timeout_ms, file.http_body_timeout_ms) {
            limits.http.body_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = pick(opts.http_write_timeout_ms, file.http_write_timeout_ms) {
            limits.http.write_timeout = Duration::from_millis(ms);
        }
        if let Some(kib) = pick(opts.http_min_send_rate_kib, file.http_min_send_rate_kib) {
            limits.http.min_send_rate = kib.saturating_mul(1024);
        }
        validate(&limits)?;
        let mut allowed_origins = file.allowed_origins.unwrap_or_default();
        allowed_origins.extend(opts.allowed_origins.iter().cloned());
        Ok(Self {
            bind: opts
                .bind
                .or(file.bind)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 3000))),
            profile,
            limits,
            known_hosts: opts.known_hosts.clone().or(file.known_hosts),
            allowed_origins,
            shutdown_grace: pick(opts.shutdown_grace_ms, file.shutdown_grace_ms)
                .map_or(DEFAULT_SHUTDOWN_GRACE, Duration::from_millis),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

fn validate(limits: &Limits) -> Result<(), ConfigError> {
    for (key, zero) in [
        ("max_mcp_sessions", limits.max_mcp_sessions == 0),
        (
            "max_mcp_sessions_per_address",
            limits.max_mcp_sessions_per_address == 0,
        ),
        ("max_output_memory_mb", limits.max_output_memory == 0),
        (
            "connect_attempts_per_client",
            limits.connect_attempts_per_client == 0,
        ),
        (
            "connect_attempts_per_address",
            limits.connect_attempts_per_address == 0,
        ),
        ("http_max_connections", limits.http.max_connections == 0),
        (
            "http_max_connections_per_address",
            limits.http.max_per_address == 0,
        ),
        (
            "http_header_timeout_ms",
            limits.http.header_timeout.is_zero(),
        ),
        ("http_body_timeout_ms", limits.http.body_timeout.is_zero()),
        ("http_write_timeout_ms", limits.http.write_timeout.is_zero()),
    ] {
        if zero {
            return Err(ConfigError::Invalid {
                key,
                message: "must be above 0".into(),
            });
        }
    }
    if limits.pool_max_per_target == 0 {
        return Err(ConfigError::Invalid {
            key: "pool_max_per_target",
            message: "must be at least 1".into(),
        });
    }
    if limits.max_connections < limits.pool_max_per_target {
        return Err(ConfigError::Invalid {
            key: "max_connections",
            message: format!(
                "{} is below pool_max_per_target ({})",
                limits.max_connections, limits.pool_max_per_target
            ),
        });
    }
    if limits.health_check_interval.is_zero() {
        return Err(ConfigError::Invalid {
            key: "health_check_interval_s",
            message: "must be at least 1".into(),
        });
    }
    if limits.session_timeout.is_zero() {
        return Err(ConfigError::Invalid {
            key: "session_timeout_s",
            message: "must be at least 1".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Opts {
        Opts::parse_from(std::iter::once("mcp-ssh-server").chain(args.iter().copied()))
    }

    #[test]
    fn profiles_match_the_guide() {
        let normal = Config::resolve(&parse(&[])).expect("defaults resolve");
        assert_eq!(normal.limits.pool_max_per_target, 10);
        assert_eq!(normal.limits.rate_per_min, Some(100));
        assert_eq!(normal.limits.address_rate_per_min, Some(200));
        assert_eq!(normal.limits.global_rate_per_min, Some(2000));
        assert_eq!(normal.limits.max_mcp_sessions_per_address, 409);
        assert_eq!(normal.limits.http.max_per_address, 51);
        assert_eq!(
            (
                normal.limits.connect_attempts_per_client,
                normal.limits.connect_attempts_per_address
            ),
            (4, 16)
        );
        assert_eq!(normal.bind, "0.0.0.0:3000".parse().expect("addr"));
        let lt = Config::resolve(&parse(&["--profile", "loadtest"])).expect("resolves");
        assert_eq!(lt.limits.pool_max_per_target, 20);
        assert_eq!(lt.limits.rate_per_min, Some(500));
        assert_eq!(lt.limits.address_rate_per_min, Some(10_000));
        assert_eq!(lt.limits.max_mcp_sessions_per_address, 4096);
        assert_eq!(lt.limits.http.max_per_address, 2048);
        assert_eq!(lt.limits.connect_attempts_per_address, 200);
        let few = Config::resolve(&parse(&["--http-max-connections", "10"])).expect("resolves");
        assert_eq!(few.limits.http.max_per_address, 10);
        // Turning the server's limits off turns the address's off too, unless it is given.
        let off = Config::resolve(&parse(&[
            "--rate-limit-per-min",
            "0",
            "--global-rate-limit-per-min",
            "0",
        ]))
        .expect("resolves");
        assert_eq!(off.limits.address_rate_per_min, None);
        let raised =
            Config::resolve(&parse(&["--global-rate-limit-per-min", "50000"])).expect("resolves");
        assert_eq!(raised.limits.address_rate_per_min, Some(5000));
        // The same for sessions: a smaller or larger server cap moves the address's.
        let small = Config::resolve(&parse(&["--max-mcp-sessions", "100"])).expect("resolves");
        assert_eq!(small.limits.max_mcp_sessions_per_address, 16);
        let tiny = Config::resolve(&parse(&["--max-mcp-sessions", "3"])).expect("resolves");
        assert_eq!(tiny.limits.max_mcp_sessions_per_address, 3);
        let big = Config::resolve(&parse(&[
            "--profile",
            "loadtest",
            "--max-mcp-sessions",
            "20000",
        ]))
        .expect("resolves");
        assert_eq!(big.limits.max_mcp_sessions_per_address, 20_000);
    }

    #[test]
    fn file_then_flags_override_profile() {
        let dir = std::env::temp_dir().join(format!("mcpcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "profile = \"loadtest\"\npool_max_per_target = 7\nrate_limit_per_min = 0\n",
        )
        .expect("write");
        let p = path.to_str().expect("utf8");
        let c = Config::resolve(&parse(&["--config", p])).expect("resolves");
        assert_eq!(c.profile, Profile::Loadtest);
        assert_eq!(c.limits.pool_max_per_target, 7);
        assert_eq!(c.limits.rate_per_min, None, "0 means unlimited");
        let c = Config::resolve(&parse(&["--config", p, "--pool-max-per-target", "3"]))
            .expect("resolves");
        assert_eq!(c.limits.pool_max_per_target, 3);
        std::fs::write(&path, "pool_max = 7\n").expect("write");
        let err = Config::resolve(&parse(&["--config", p])).expect_err("unknown key");
        assert!(err.to_string().contains("pool_max"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn nonsense_limits_are_refused() {
        let err = Config::resolve(&parse(&["--pool-max-per-target", "0"])).expect_err("refused");
        assert!(err.to_string().contains("pool_max_per_target"));
        let err = Config::resolve(&parse(&["--max-connections", "2"])).expect_err("refused");
        assert!(err.to_string().contains("max_connections"));
    }
}
