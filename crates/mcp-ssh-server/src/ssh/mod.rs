//! SSH client layer: one authenticated connection to one host, and running
//! commands on it.
//!
//! This module owns everything that speaks SSH (via [`russh`]): TCP connect
//! with timeouts, host-key verification ([`HostKeyPolicy`]), password and
//! private-key authentication ([`Auth`]), and [`Connection::exec`], which runs
//! one command per `exec` channel with an output cap and a timeout. Pooling,
//! allowlists and the MCP protocol live elsewhere and only see the types
//! here, so that the rest of the server never depends on russh directly.
//!
//! A [`Connection`] is cheap to clone (an `Arc`); clones share the same SSH
//! session, and any number of commands may run on it concurrently, each on
//! its own channel (up to the server's `MaxSessions`, 10 by default in
//! OpenSSH). Every failure is an [`SshError`] whose message is meant for end
//! users.

mod error;
mod key;
mod known_hosts;

pub use error::SshError;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::client::{self, AuthResult};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Sig};
use tokio::net::TcpStream;

/// After output was truncated, how many more bytes are read and discarded
/// while waiting for the command to exit (to still report its exit status)
/// before the channel is closed instead.
const DISCARD_BUDGET: usize = 8 * 1024 * 1024;

/// Where to connect and as whom.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host name or IP address.
    pub host: String,
    /// TCP port (22 for standard SSH).
    pub port: u16,
    /// Remote user name.
    pub user: String,
}

impl Target {
    /// `host:port`, with IPv6 literals bracketed (`[::1]:22`).
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Target {
    /// `user@host:port`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.user, self.addr())
    }
}

/// Credentials. `Debug` never prints the secrets.
#[derive(Clone)]
pub enum Auth {
    /// Password authentication.
    Password(String),
    /// Public-key authentication with a private key in OpenSSH, PKCS#8,
    /// PKCS#1 or PuTTY format.
    PrivateKey {
        /// The private key text (`-----BEGIN OPENSSH PRIVATE KEY-----...`).
        pem: String,
        /// Passphrase, if the key is encrypted.
        passphrase: Option<String>,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Password(_) => f.debug_tuple("Password").field(&"<redacted>").finish(),
            Auth::PrivateKey { passphrase, .. } => f
                .debug_struct("PrivateKey")
                .field("pem", &"<redacted>")
                .field("passphrase", &passphrase.as_ref().map(|_| "<redacted>"))
                .finish(),
        }
    }
}

impl Auth {
    /// The credentials to authenticate with: the password, or the private key decoded
    /// (`key::decode`: refused at once when it asks for too much work, else decoded off the
    /// async runtime within `budget`, in `address`'s turn, so addresses share the decoders
    /// fairly).
    pub async fn prepare(
        &self,
        budget: Duration,
        address: IpAddr,
    ) -> Result<Credentials, SshError> {
        match self {
            Auth::Password(p) => Ok(Credentials::Password(p.clone())),
            Auth::PrivateKey { pem, passphrase } => Ok(Credentials::Key(
                key::decode(pem, passphrase.as_deref(), budget, address).await?,
            )),
        }
    }
}

/// Credentials ready to authenticate with. `Debug` never prints the secrets.
#[derive(Clone)]
pub enum Credentials {
    /// Password authentication.
    Password(String),
    /// Public-key authentication with this (decoded) private key.
    Key(Arc<PrivateKey>),
}

impl Credentials {
    /// The SSH method name (`"password"` or `"publickey"`).
    pub fn method(&self) -> &'static str {
        match self {
            Credentials::Password(_) => "password",
            Credentials::Key(_) => "publickey",
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Password(_) => f.debug_tuple("Password").field(&"<redacted>").finish(),
            Credentials::Key(k) => f.debug_tuple("Key").field(&k.algorithm().as_str()).finish(),
        }
    }
}

/// How to decide whether to trust the server's host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Accept only keys recorded in this OpenSSH known_hosts file (entries
    /// `host` for port 22, `[host]:port` otherwise). Unknown keys are
    /// rejected, never learned.
    KnownHosts(PathBuf),
    /// Accept any host key. Only for tests and throwaway labs: it allows
    /// man-in-the-middle attacks.
    Insecure,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Budget for name resolution, TCP connect and the SSH handshake
    /// (including host-key verification) together.
    pub connect_timeout: Duration,
    /// Budget for authentication.
    pub auth_timeout: Duration,
    /// Host-key verification.
    pub host_keys: HostKeyPolicy,
    /// Send an SSH keepalive after this much silence from the server; after
    /// 3 unanswered keepalives the connection is dropped. `None` disables.
    pub keepalive: Option<Duration>,
}

impl ConnectOptions {
    /// Defaults: 10 s connect, 15 s auth, keepalive every 30 s.
    pub fn new(host_keys: HostKeyPolicy) -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            auth_timeout: Duration::from_secs(15),
            host_keys,
            keepalive: Some(Duration::from_secs(30)),
        }
    }
}

/// The go-ahead a gated command waits for ([`Connection::exec_gated`]).
#[derive(Debug)]
pub struct Gate<F> {
    /// How many NUL-terminated fields the header has.
    pub fields: usize,
    /// Sees the stdout so far (the header, and whatever came with it); `true`: go ahead.
    pub decide: F,
}

/// Limits for one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecLimits {
    /// Wall-clock limit from opening the channel to the command's exit.
    pub timeout: Duration,
    /// Cap on stdout and stderr *combined*, in bytes.
    pub max_output: usize,
}

/// Result of a command that ran to completion (or whose output was cut).
#[derive(Debug)]
pub struct ExecOutput {
    /// Standard output (at most `max_output` bytes together with `stderr`).
    pub stdout: Vec<u8>,
    /// Standard error (extended data stream 1).
    pub stderr: Vec<u8>,
    /// Exit status, if the server reported one. `None` when the command was
    /// killed by a signal, or when the channel was closed early after
    /// truncation.
    pub exit_status: Option<u32>,
    /// Name of the signal that killed the command (`"KILL"`, `"TERM"`, ...).
    pub exit_signal: Option<String>,
    /// Whether output beyond `max_output` was dropped.
    pub truncated: bool,
    /// Time from opening the channel to its close.
    pub duration: Duration,
    /// The output's share of the server's output budget, given back when this is dropped.
    pub charge: crate::budget::Charge,
}

impl ExecOutput {
    /// Whether the command exited with status 0.
    pub fn success(&self) -> bool {
        self.exit_status == Some(0)
    }
}

/// An authenticated SSH connection. Clones share the session.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    handle: client::Handle<ClientHandler>,
    target: Target,
    addr: String,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.inner.target)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Connection {
    /// Connects, verifies the host key and authenticates.
    ///
    /// A private key is decoded before any network traffic ([`Auth::prepare`], as this
    /// machine's own address), so a bad key or passphrase fails fast with [`SshError::Key`];
    /// a key that asks for too much work, or takes longer than the connect timeout to decode,
    /// with [`SshError::KeyPolicy`].
    pub async fn connect(
        target: &Target,
        auth: &Auth,
        opts: &ConnectOptions,
    ) -> Result<Connection, SshError> {
        let credentials = auth
            .prepare(opts.connect_timeout, IpAddr::from([0, 0, 0, 0]))
            .await?;
        Self::connect_with(target, &credentials, opts).await
    }

    /// Connects, verifies the host key and authenticates with `credentials`.
    pub async fn connect_with(
        target: &Target,
        credentials: &Credentials,
        opts: &ConnectOptions,
    ) -> Result<Connection, SshError> {
        let addr = target.addr();

        let connect_timeout = SshError::ConnectTimeout {
            addr: addr.clone(),
            after_ms: millis(opts.connect_timeout),
        };
        let mut handle = match tokio::time::timeout(
            opts.connect_timeout,
            handshake(target, &addr, opts),
        )
        .await
        {
            Ok(result) => result?,
            Err(_) => return Err(connect_timeout),
        };

        let authenticated = tokio::time::timeout(
            opts.auth_timeout,
            authenticate(&mut handle, target, &addr, credentials),
        )
        .await;
        let failure = match authenticated {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(SshError::AuthTimeout {
                user: target.user.clone(),
                addr: addr.clone(),
                after_ms: millis(opts.auth_timeout),
            }),
        };
        if let Some(e) = failure {
            let _ = handle
                .disconnect(Disconnect::ByApplication, "authentication failed", "en")
                .await;
            return Err(e);
        }
        tracing::info!(target = %target, method = credentials.method(), "ssh connection established");
        Ok(Connection {
            inner: Arc::new(Inner {
                handle,
                target: target.clone(),
                addr,
            }),
        })
    }

    /// Runs `command` on a new exec channel and collects its output.
    ///
    /// * stdout and stderr are collected separately; together they are capped
    ///   at `limits.max_output` bytes and `truncated` is set when more came.
    ///   After truncation the rest is read and discarded (so the exit status
    ///   is still reported) for up to 8 MiB more; past that the command is
    ///   sent SIGTERM and the channel closed, and `exit_status` is `None`.
    /// * When `limits.timeout` elapses the command is sent SIGTERM (OpenSSH
    ///   honours signal requests since 7.9), the channel is closed and
    ///   [`SshError::Timeout`] returned; the connection stays usable.
    /// * If the connection drops meanwhile: [`SshError::Disconnected`].
    ///   If the server refuses the channel or command: [`SshError::Channel`].
    pub async fn exec(&self, command: &str, limits: &ExecLimits) -> Result<ExecOutput, SshError> {
        self.exec_until(command, limits, std::future::pending())
            .await
    }

    /// [`Connection::exec`], stopped when `stop` completes (the server is shutting down): the
    /// command is sent SIGTERM and its channel closed before this returns
    /// [`SshError::ShuttingDown`], so the signal is on its way before the connection itself is
    /// closed.
    pub async fn exec_until(
        &self,
        command: &str,
        limits: &ExecLimits,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<ExecOutput, SshError> {
        self.run(command, limits, stop, None::<Gate<fn(&[u8]) -> bool>>)
            .await
    }

    /// [`Connection::exec_until`] for a command that prints a header and then waits on its
    /// stdin for a go-ahead (`read -r go && [ "$go" = y ] && ...`): once `gate.fields`
    /// NUL-terminated fields are on its stdout, `gate.decide` sees that stdout; `true` sends
    /// `y` and a newline, `false` nothing; then stdin is closed. The output includes the
    /// header.
    pub async fn exec_gated<F: FnOnce(&[u8]) -> bool>(
        &self,
        command: &str,
        limits: &ExecLimits,
        stop: impl std::future::Future<Output = ()>,
        gate: Gate<F>,
    ) -> Result<ExecOutput, SshError> {
        self.run(command, limits, stop, Some(gate)).await
    }

    async fn run<F: FnOnce(&[u8]) -> bool>(
        &self,
        command: &str,
        limits: &ExecLimits,
        stop: impl std::future::Future<Output = ()>,
        mut gate: Option<Gate<F>>,
    ) -> Result<ExecOutput, SshError> {
        tokio::pin!(stop);
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + limits.timeout;
        let timed_out = || SshError::Timeout {
            after_ms: millis(limits.timeout),
        };
        let addr = &self.inner.addr;

        // Opened in a task so that, on timeout, a channel the server confirms
        // later is still closed instead of lingering (and counting against
        // the server's MaxSessions) for the life of the connection.
        let inner = Arc::clone(&self.inner);
        let mut open = tokio::spawn(async move { inner.handle.channel_open_session().await });
        let opened = tokio::select! {
            r = tokio::time::timeout_at(deadline, &mut open) => r.map_err(|_| timed_out()),
            () = &mut stop => Err(SshError::ShuttingDown),
        };
        let mut channel = match opened {
            Err(e) => {
                tokio::spawn(async move {
                    if let Ok(Ok(late)) = open.await {
                        let _ = late.close().await;
                    }
                });
                return Err(e);
            }
            Ok(Err(join_error)) => {
                return Err(SshError::Channel(format!(
                    "opening a channel failed: {join_error}"
                )));
            }
            Ok(Ok(Err(e))) => return Err(self.lost_or(e)),
            Ok(Ok(Ok(channel))) => ChannelGuard(Some(channel)),
        };
        let requested = tokio::select! {
            r = tokio::time::timeout_at(deadline, channel.get().exec(true, command)) => {
                r.map_err(|_| timed_out())
            }
            () = &mut stop => Err(SshError::ShuttingDown),
        };
        match requested {
            Err(e) => {
                channel.abort().await;
                return Err(e);
            }
            Ok(Err(e)) => return Err(self.lost_or(e)),
            Ok(Ok(())) => {}
        }
        tracing::debug!(target = %self.inner.target, channel = %channel.get().id(), command, "exec");

        let mut out = Collector::new(limits.max_output);
        let mut exit_status = None;
        let mut exit_signal = None;
        let mut eof = false;
        loop {
            let next = tokio::select! {
                r = tokio::time::timeout_at(deadline, channel.get().wait()) => r.map_err(|_| timed_out()),
                () = &mut stop => Err(SshError::ShuttingDown),
            };
            let msg = match next {
                Err(e) => {
                    tracing::info!(target = %self.inner.target, command, error = %e, "command stopped");
                    channel.abort().await;
                    return Err(e);
                }
                Ok(None) => {
                    // The channel's sender went away without a Close: the
                    // session task ended (connection lost).
                    if eof && exit_status.is_some() {
                        break;
                    }
                    return Err(if self.is_closed() {
                        SshError::Disconnected {
                            addr: addr.clone(),
                            reason: "the connection dropped while the command was running"
                                .to_owned(),
                        }
                    } else {
                        SshError::Channel("the channel closed unexpectedly".to_owned())
                    });
                }
                Ok(Some(msg)) => msg,
            };
            let pushed = match &msg {
                ChannelMsg::Data { data } => out.push(false, data),
                ChannelMsg::ExtendedData { data, ext: 1 } => out.push(true, data),
                _ => Ok(()),
            };
            if let Err(busy) = pushed {
                channel.abort().await;
                return Err(busy);
            }
            if let Some(g) =
                gate.take_if(|g| out.stdout.iter().filter(|&&b| b == 0).count() >= g.fields)
            {
                let go = (g.decide)(&out.stdout);
                let answered = async {
                    if go {
                        channel.get().data(&b"y\n"[..]).await?;
                    }
                    channel.get().eof().await
                };
                if let Err(e) = answered.await {
                    return Err(self.lost_or(e));
                }
            }
            match msg {
                ChannelMsg::ExitStatus {
                    exit_status: status,
                } => exit_status = Some(status),
                ChannelMsg::ExitSignal {
                    signal_name,
                    core_dumped,
                    error_message,
                    ..
                } => {
                    tracing::debug!(
                        signal = ?signal_name,
                        core_dumped,
                        error_message,
                        "command killed by signal"
                    );
                    exit_signal = Some(signal_name_of(&signal_name));
                }
                ChannelMsg::Failure => {
                    channel.abort().await;
                    return Err(SshError::Channel(format!(
                        "{addr} refused to run the command"
                    )));
                }
                ChannelMsg::Eof => eof = true,
                ChannelMsg::Close => break,
                _ => {}
            }
            if out.discarded > DISCARD_BUDGET {
                tracing::debug!(command, "output far over the cap; closing the channel");
                channel.abort().await;
                break;
            }
        }
        // Finished: the server closed the channel, or it was aborted above.
        channel.0 = None;
        Ok(ExecOutput {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_status,
            exit_signal,
            truncated: out.truncated,
            duration: started.elapsed(),
            charge: out.charge,
        })
    }

    /// Whether the underlying SSH session has ended (for whatever reason).
    pub fn is_closed(&self) -> bool {
        self.inner.handle.is_closed()
    }

    /// Cheap health probe for pools: sends an OpenSSH
    /// `keepalive@openssh.com` global request with want-reply and waits for
    /// the answer (OpenSSH answers with REQUEST_FAILURE, which counts as
    /// alive: any answer proves the session works end to end). No channel is
    /// opened, so it does not count against `MaxSessions`. Returns `false`
    /// if the session is closed, errors, or no answer comes in `timeout`.
    pub async fn check_alive(&self, timeout: Duration) -> bool {
        if self.is_closed() {
            return false;
        }
        let probe = self
            .inner
            .handle
            .send_global_request("keepalive@openssh.com", &[], true);
        match tokio::time::timeout(timeout, probe).await {
            Ok(Ok(_)) | Ok(Err(russh::Error::RequestDenied)) => true,
            Ok(Err(e)) => {
                tracing::debug!(target = %self.inner.target, error = %e, "health probe failed");
                false
            }
            Err(_) => {
                tracing::debug!(target = %self.inner.target, "health probe timed out");
                false
            }
        }
    }

    /// Politely disconnects (SSH_MSG_DISCONNECT). Commands still running on
    /// other clones fail with [`SshError::Disconnected`]. Never fails.
    pub async fn close(&self) {
        if let Err(e) = self
            .inner
            .handle
            .disconnect(Disconnect::ByApplication, "bye", "en")
            .await
        {
            tracing::debug!(target = %self.inner.target, error = %e, "disconnect: session already gone");
            return;
        }
        // `disconnect` only queues the message for the session task; wait (bounded) until the
        // task has sent it and ended, so a process that exits right after still says goodbye.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while !self.is_closed() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Where this connection goes.
    pub fn target(&self) -> &Target {
        &self.inner.target
    }

    /// Maps a russh error to [`SshError::Disconnected`] if the session is
    /// gone, else to the closest variant. A closed session's error says what happened to the
    /// connection in words, never russh's internals ("Channel send error").
    fn lost_or(&self, e: russh::Error) -> SshError {
        match SshError::from_russh(e, &self.inner.addr) {
            lost @ SshError::Disconnected { .. } => lost,
            _ if self.is_closed() => SshError::Disconnected {
                addr: self.inner.addr.clone(),
                reason: "the SSH server closed the connection".to_owned(),
            },
            other => other,
        }
    }
}

/// Resolves, connects over TCP and runs the SSH handshake.
async fn handshake(
    target: &Target,
    addr: &str,
    opts: &ConnectOptions,
) -> Result<client::Handle<ClientHandler>, SshError> {
    let stream = tcp_connect(target, addr).await?;
    let mut config = client::Config {
        keepalive_interval: opts.keepalive,
        keepalive_max: 3,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    };
    if let HostKeyPolicy::KnownHosts(path) = &opts.host_keys {
        let known = known_hosts::known_algorithms(path, &target.host, target.port);
        if !known.is_empty() {
            config.preferred.key = known_hosts::prefer_known(&config.preferred.key, &known).into();
        }
    }
    let handler = ClientHandler {
        policy: opts.host_keys.clone(),
        host: target.host.clone(),
        port: target.port,
        addr: addr.to_owned(),
    };
    client::connect_stream(Arc::new(config), stream, handler)
        .await
        .map_err(|e| e.with_addr(addr))
}

/// Resolves `target.host` and connects to the first address that accepts.
async fn tcp_connect(target: &Target, addr: &str) -> Result<TcpStream, SshError> {
    let addrs: Vec<_> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| SshError::Resolve {
            host: target.host.clone(),
            reason: e.to_string(),
        })?
        .collect();
    let mut last_error = SshError::Resolve {
        host: target.host.clone(),
        reason: "no addresses found".to_owned(),
    };
    for socket_addr in addrs {
        match TcpStream::connect(socket_addr).await {
            Ok(stream) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!("set_nodelay failed: {e}");
                }
                return Ok(stream);
            }
            Err(e) => {
                tracing::debug!(%socket_addr, error = %e, "tcp connect failed");
                last_error = classify_connect_error(&e, addr);
            }
        }
    }
    Err(last_error)
}

fn classify_connect_error(e: &std::io::Error, addr: &str) -> SshError {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => SshError::Refused {
            addr: addr.to_owned(),
        },
        _ => SshError::Unreachable {
            addr: addr.to_owned(),
            reason: e.to_string(),
        },
    }
}

/// Runs one authentication attempt with the given credentials.
async fn authenticate(
    handle: &mut client::Handle<ClientHandler>,
    target: &Target,
    addr: &str,
    auth: &Credentials,
) -> Result<(), SshError> {
    let user = target.user.as_str();
    let result = match auth {
        Credentials::Password(password) => handle.authenticate_password(user, password).await,
        Credentials::Key(key) => {
            // RSA keys must sign with a hash the server accepts
            // (rsa-sha2-512/256; plain ssh-rsa/SHA-1 only for old servers).
            let hash = if key.algorithm().is_rsa() {
                handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(|e| SshError::from_russh(e, addr))?
                    .flatten()
            } else {
                None
            };
            handle
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
                .await
        }
    }
    .map_err(|e| SshError::from_russh(e, addr))?;

    match result {
        AuthResult::Success => Ok(()),
        AuthResult::Failure {
            remaining_methods,
            partial_success,
        } => {
            // russh also reports "Failure" when the session died meanwhile.
            if handle.is_closed() {
                return Err(SshError::Disconnected {
                    addr: addr.to_owned(),
                    reason: "the server closed the connection during authentication".to_owned(),
                });
            }
            let allowed: Vec<String> = remaining_methods.iter().map(String::from).collect();
            tracing::info!(
                user,
                %addr,
                method = auth.method(),
                partial_success,
                ?allowed,
                "ssh authentication rejected"
            );
            Err(SshError::AuthFailed {
                user: user.to_owned(),
                addr: addr.to_owned(),
                tried: auth.method().to_owned(),
                allowed,
            })
        }
    }
}

/// Best-effort: ask the server to SIGTERM the command, then close the
/// channel. The channel must not be waited on afterwards: russh forgets a
/// channel as soon as we send CLOSE, so the server's CLOSE never arrives.
/// An exec channel that is aborted ([`abort`]) when dropped before its command finished: the
/// future of a tool call is dropped when its HTTP client hangs up, and that must not leave the
/// remote command running nor its channel counted against the server's `MaxSessions` on a
/// connection the pool hands to the next client.
struct ChannelGuard(Option<russh::Channel<client::Msg>>);

impl ChannelGuard {
    fn get(&mut self) -> &mut russh::Channel<client::Msg> {
        // Only `abort` and the end of `exec` take the channel, and nothing uses it after them.
        self.0
            .as_mut()
            .expect("the channel is in use until exec ends")
    }

    /// SIGTERM to the command and close the channel, now.
    async fn abort(&mut self) {
        if let Some(ch) = self.0.take() {
            abort(&ch).await;
        }
    }
}

impl Drop for ChannelGuard {
    fn drop(&mut self) {
        if let Some(ch) = self.0.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move { abort(&ch).await });
        }
    }
}

async fn abort(channel: &russh::Channel<client::Msg>) {
    let _ = channel.signal(Sig::TERM).await;
    let _ = channel.close().await;
}

fn signal_name_of(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name,
    }
    .to_owned()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Collects stdout/stderr under a combined cap.
struct Collector {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    max: usize,
    truncated: bool,
    discarded: usize,
    charge: crate::budget::Charge,
}

impl Collector {
    fn new(max: usize) -> Self {
        Self {
            stdout: Vec::new(),
            stderr: Vec::new(),
            max,
            truncated: false,
            discarded: 0,
            charge: crate::budget::SERVER.charge(),
        }
    }

    /// Keeps what fits under `max`; `Err` when the server's output budget has no room for it.
    fn push(&mut self, is_stderr: bool, data: &[u8]) -> Result<(), SshError> {
        let room = self
            .max
            .saturating_sub(self.stdout.len() + self.stderr.len());
        let take = room.min(data.len());
        if !self.charge.grow(take) {
            return Err(SshError::Busy(format!(
                "the server already holds {} MiB of command output, its budget \
                 (--max-output-memory-mb {}); try again, or ask for less (max_output)",
                crate::budget::SERVER.used() / (1024 * 1024),
                crate::budget::SERVER.max() / (1024 * 1024)
            )));
        }
        let buf = if is_stderr {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        buf.extend_from_slice(data.get(..take).unwrap_or_default());
        if take < data.len() {
            self.truncated = true;
            self.discarded = self.discarded.saturating_add(data.len() - take);
        }
        Ok(())
    }
}

/// russh callbacks: only host-key verification is customised.
struct ClientHandler {
    policy: HostKeyPolicy,
    host: String,
    port: u16,
    addr: String,
}

impl client::Handler for ClientHandler {
    type Error = SshError;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, SshError> {
        let key = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            // Certificates are never requested (Preferred::host_key_certificates
            // is empty), so a server sending one is misbehaving.
            PublicKeyOrCertificate::Certificate(_) => {
                return Err(SshError::Channel(format!(
                    "{} presented an unrequested host certificate",
                    self.addr
                )));
            }
        };
        match &self.policy {
            HostKeyPolicy::Insecure => {
                tracing::debug!(
                    addr = %self.addr,
                    fingerprint = %key.fingerprint(russh::keys::HashAlg::Sha256),
                    "accepting host key without verification (insecure policy)"
                );
                Ok(true)
            }
            HostKeyPolicy::KnownHosts(path) => {
                known_hosts::verify(path, &self.host, self.port, &self.addr, key).map(|()| true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_debug_hides_secrets() {
        let pw = format!("{:?}", Auth::Password("hunter2".into()));
        assert!(!pw.contains("hunter2"), "{pw}");
        let key = format!(
            "{:?}",
            Auth::PrivateKey {
                pem: "-----BEGIN OPENSSH PRIVATE KEY-----secret".into(),
                passphrase: Some("pass".into()),
            }
        );
        assert!(!key.contains("secret") && !key.contains("pass\""), "{key}");
    }

    #[test]
    fn target_formats_ipv6() {
        let t = Target {
            host: "::1".into(),
            port: 2222,
            user: "u".into(),
        };
        assert_eq!(t.addr(), "[::1]:2222");
        assert_eq!(t.to_string(), "u@[::1]:2222");
    }

    #[test]
    fn collector_caps_combined_output() {
        let mut c = Collector::new(5);
        for (err, data) in [(false, &b"abc"[..]), (true, b"defg"), (false, b"h")] {
            c.push(err, data).expect("within the server's budget");
        }
        assert_eq!(c.stdout, b"abc");
        assert_eq!(c.stderr, b"de");
        assert!(c.truncated);
        assert_eq!(c.discarded, 3);
        assert_eq!(c.charge.bytes(), 5, "only what is kept is charged");
    }

    #[tokio::test]
    async fn bad_key_fails_before_connecting() {
        let err = Connection::connect(
            &Target {
                host: "127.0.0.1".into(),
                port: 1,
                user: "u".into(),
            },
            &Auth::PrivateKey {
                pem: "not a key".into(),
                passphrase: None,
            },
            &ConnectOptions::new(HostKeyPolicy::Insecure),
        )
        .await
        .expect_err("bad key");
        assert!(matches!(err, SshError::Key(_)), "{err:?}");
    }
}
