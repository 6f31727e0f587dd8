//! The real-OpenSSH `sshd` fixture: [`SshdBuilder`] and [`Sshd`].
//!
//! See the crate docs for the namespace design. This module owns the temp
//! dir layout:
//!
//! ```text
//! <dir>/sshd_config, ssh_host_ed25519_key{,.pub}, passwd, group, shadow,
//!       sshd.log, sshd.pid, known_hosts
//! <dir>/keys/<user>{,.pub}                 client key pairs (root-only)
//! <dir>/home/<user>/.ssh/authorized_keys   owned by the user's uid
//! <dir>/bind/<n>-<name>                    files bind-mounted over the machine's (bind_file)
//! ```

use std::fmt;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sshlab_sshd::{
    Account, AccountFiles, FIRST_UID, PER_SOURCE_PENALTIES, ServerConfig, ensure_privsep_dir,
    hash_password, install_home, read_public_key, set_mode, ssh_keygen, supports_keyword,
    validate_user_name,
};

use crate::install::{FIXTURE_MARKER, ensure_openssh_server};

/// How often `start` retries when the chosen port was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;
/// How long a graceful SIGTERM may take before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// A test user to create.
#[derive(Clone)]
struct UserSpec {
    name: String,
    password: Option<String>,
    key: bool,
}

impl fmt::Debug for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserSpec")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("key", &self.key)
            .finish()
    }
}

/// Builds and starts an [`Sshd`].
///
/// ```no_run
/// # fn main() -> anyhow::Result<()> {
/// let sshd = sshlab_testkit::SshdBuilder::new()
///     .password_user("alice", "wonderland")
///     .key_user("bob")
///     .start()?;
/// println!("ssh -p {} -i {} bob@127.0.0.1", sshd.port, sshd.private_key_path("bob").display());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SshdBuilder {
    users: Vec<UserSpec>,
    extra_config: Vec<String>,
    bind_files: Vec<(PathBuf, String)>,
    mount_proc: bool,
    start_timeout: Duration,
}

impl Default for SshdBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SshdBuilder {
    /// A builder with no users and the default configuration.
    pub fn new() -> Self {
        Self {
            users: Vec::new(),
            extra_config: Vec::new(),
            bind_files: Vec::new(),
            mount_proc: false,
            start_timeout: Duration::from_secs(20),
        }
    }

    fn user_mut(&mut self, name: String) -> &mut UserSpec {
        let index = match self.users.iter().position(|u| u.name == name) {
            Some(index) => index,
            None => {
                self.users.push(UserSpec {
                    name,
                    password: None,
                    key: false,
                });
                self.users.len() - 1
            }
        };
        &mut self.users[index]
    }

    /// Adds a user who can log in with `password`. Combine with
    /// [`key_user`](Self::key_user) on the same name for a user with both.
    pub fn password_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user_mut(name.into()).password = Some(password.into());
        self
    }

    /// Adds a user who logs in with a fresh ed25519 key pair (made by
    /// `ssh-keygen`, public half installed in their `authorized_keys`); see
    /// [`Sshd::private_key_path`] and [`Sshd::private_key_pem`].
    pub fn key_user(mut self, name: impl Into<String>) -> Self {
        self.user_mut(name.into()).key = true;
        self
    }

    /// Adds a line to `sshd_config`.
    ///
    /// sshd keeps the *first* value it reads for a keyword, so extra lines
    /// are written before the fixture's defaults and override them. Lines
    /// from the first `Match` on are written at the very end instead (a
    /// `Match` block runs to the end of the file).
    pub fn extra_config(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }

    /// Bind-mounts a file with `contents` over `target`, an existing file, in
    /// sshd's private mount namespace only: the machine's file is untouched.
    /// For example a PAM service of the test's own:
    /// `.bind_file("/etc/pam.d/sshd", "auth required pam_unix.so\n...")`
    /// (with `extra_config("UsePAM yes")`). The file is world-readable (0644)
    /// and lives in the fixture's dir; [`start`](Self::start) fails if `target`
    /// is not an existing file.
    pub fn bind_file(mut self, target: impl Into<PathBuf>, contents: impl Into<String>) -> Self {
        self.bind_files.push((target.into(), contents.into()));
        self
    }

    /// Mounts a `/proc` of sshd's own PID namespace (`unshare --mount-proc`).
    ///
    /// Without it sshd and its children see the machine's `/proc`, whose pids
    /// are not the ones they get from `getpid`/`getppid` inside the namespace:
    /// a helper that looks its parent up (`$PPID` in `ss -p`, `ps`, `/proc`),
    /// such as a `pam_exec` script, would find nothing, or another process.
    pub fn mount_proc(mut self) -> Self {
        self.mount_proc = true;
        self
    }

    /// How long [`start`](Self::start) waits for sshd to listen (default 20 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Generates everything and starts sshd; returns once it accepts TCP
    /// connections and has logged "Server listening".
    ///
    /// Synchronous (it only spawns processes and polls), so it is fine to call
    /// from `#[tokio::test]` functions. Needs root: see the crate docs.
    pub fn start(self) -> anyhow::Result<Sshd> {
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "sshd fixture needs root (to bind-mount generated passwd/shadow in a private mount namespace)"
            );
        }
        for user in &self.users {
            validate_user_name(&user.name)?;
        }
        let sshd_bin = ensure_openssh_server()?;

        let tempdir = tempfile::Builder::new()
            .prefix(FIXTURE_MARKER)
            .tempdir()
            .context("cannot create the fixture temp dir")?;
        let dir = tempdir.path().to_path_buf();
        // Users' shells run with their own uid and start in their home inside
        // this dir, so it must be traversable (private keys stay 0600).
        set_mode(&dir, 0o755)?;

        let host_key = dir.join("ssh_host_ed25519_key");
        ssh_keygen(&host_key, "sshlab-testkit-host")?;
        let host_key_pub = read_public_key(&host_key.with_extension("pub"))?;

        let users = self.create_users(&dir)?;
        let accounts: Vec<Account> = users.iter().map(|u| u.account.clone()).collect();
        AccountFiles::new(None, &accounts).write(&dir)?;
        let binds = self.write_bind_files(&dir)?;
        ensure_privsep_dir()?;

        let penalties = supports_keyword(&sshd_bin, PER_SOURCE_PENALTIES);
        let mut last_error = None;
        for attempt in 1..=PORT_ATTEMPTS {
            let port = crate::free_port();
            let config = self.sshd_config(&dir, port, penalties);
            fs::write(dir.join("sshd_config"), config).context("cannot write sshd_config")?;
            let mut process = ServerProcess::spawn(&dir, &sshd_bin, &binds, self.mount_proc)?;
            match process.wait_ready(&dir, port, self.start_timeout) {
                Ok(()) => {
                    let known_hosts_line = format!("[127.0.0.1]:{port} {host_key_pub}");
                    fs::write(dir.join("known_hosts"), format!("{known_hosts_line}\n"))
                        .context("cannot write known_hosts")?;
                    tracing::info!(
                        port,
                        pid = process.sshd_pid,
                        dir = %dir.display(),
                        "sshd fixture listening"
                    );
                    return Ok(Sshd {
                        port,
                        host_key_pub,
                        known_hosts_line,
                        dir,
                        users,
                        process,
                        _tempdir: tempdir,
                    });
                }
                Err(StartError::PortTaken) => {
                    tracing::debug!(port, attempt, "port was taken; retrying with another");
                    last_error = Some(anyhow::anyhow!("port {port} was taken"));
                }
                Err(StartError::Failed(e)) => return Err(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
            .context(format!(
                "sshd could not bind a free port in {PORT_ATTEMPTS} attempts"
            )))
    }

    fn create_users(&self, dir: &Path) -> anyhow::Result<Vec<User>> {
        let keys = dir.join("keys");
        fs::create_dir(&keys).context("cannot create keys dir")?;
        set_mode(&keys, 0o700)?;
        let mut users = Vec::new();
        for (uid, spec) in (FIRST_UID..).zip(&self.users) {
            let home = dir.join("home").join(&spec.name);
            let (key_path, authorized_keys) = if spec.key {
                let path = keys.join(&spec.name);
                ssh_keygen(&path, &format!("{}@sshlab-testkit", spec.name))?;
                let public = fs::read_to_string(path.with_extension("pub"))
                    .context("cannot read generated public key")?;
                (Some(path), public)
            } else {
                (None, String::new())
            };
            install_home(&home, uid, &authorized_keys)?;
            let password_hash = match &spec.password {
                Some(password) => Some(hash_password(password)?),
                None => None,
            };
            users.push(User {
                account: Account {
                    name: spec.name.clone(),
                    uid,
                    home,
                    shell: "/bin/sh".to_owned(),
                    password_hash,
                },
                key_path,
            });
        }
        Ok(users)
    }

    /// Writes each [`bind_file`](Self::bind_file) into `<dir>/bind`; returns
    /// (source, target) pairs.
    fn write_bind_files(&self, dir: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
        if self.bind_files.is_empty() {
            return Ok(Vec::new());
        }
        let bind_dir = dir.join("bind");
        fs::create_dir(&bind_dir).context("cannot create the bind dir")?;
        let mut binds = Vec::new();
        for (n, (target, contents)) in self.bind_files.iter().enumerate() {
            if !target.is_file() {
                bail!(
                    "bind_file: {} is not an existing file (a bind mount needs one to cover)",
                    target.display()
                );
            }
            let name = target
                .file_name()
                .map_or_else(|| "file".into(), |name| name.to_string_lossy().into_owned());
            let source = bind_dir.join(format!("{n}-{name}"));
            fs::write(&source, contents)
                .with_context(|| format!("cannot write {}", source.display()))?;
            set_mode(&source, 0o644)?;
            binds.push((source, target.clone()));
        }
        Ok(binds)
    }

    fn sshd_config(&self, dir: &Path, port: u16, per_source_penalties: bool) -> String {
        let match_start = self
            .extra_config
            .iter()
            .position(|l| l.trim_start().to_ascii_lowercase().starts_with("match "))
            .unwrap_or(self.extra_config.len());
        let (overrides, match_blocks) = self.extra_config.split_at(match_start);
        let mut config = String::from("# Generated by sshlab-testkit.\n");
        for line in overrides {
            config.push_str(line);
            config.push('\n');
        }
        let settings = ServerConfig {
            listen: Ipv4Addr::LOCALHOST,
            ports: &[port],
            host_key: &dir.join("ssh_host_ed25519_key"),
            pid_file: &dir.join("sshd.pid"),
            use_pam: false,
            password_authentication: true,
            permit_root_login: false,
            no_per_source_penalties: per_source_penalties,
        };
        config.push_str(&settings.render());
        config.push_str("Subsystem sftp internal-sftp\n");
        for line in match_blocks {
            config.push_str(line);
            config.push('\n');
        }
        config
    }
}

/// A created test user.
#[derive(Debug)]
struct User {
    /// Name, uid, home (all with shell `/bin/sh`) and password hash.
    account: Account,
    key_path: Option<PathBuf>,
}

/// A running OpenSSH server for one test; stopped and cleaned up on drop.
#[derive(Debug)]
pub struct Sshd {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The server's host public key, `"ssh-ed25519 AAAA..."` (no comment).
    pub host_key_pub: String,
    /// An OpenSSH known_hosts line for this server:
    /// `"[127.0.0.1]:PORT ssh-ed25519 AAAA..."`.
    pub known_hosts_line: String,
    /// The fixture's temp dir (config, keys, homes, log); removed on drop.
    pub dir: PathBuf,
    users: Vec<User>,
    process: ServerProcess,
    // Dropped last: the server is stopped (in `Drop`) before its files go.
    _tempdir: tempfile::TempDir,
}

impl Sshd {
    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn user(&self, name: &str) -> &User {
        self.users
            .iter()
            .find(|u| u.account.name == name)
            .unwrap_or_else(|| panic!("sshd fixture has no user {name:?}"))
    }

    /// Path of the OpenSSH-format private key of a [`key_user`](SshdBuilder::key_user).
    ///
    /// # Panics
    ///
    /// If `user` was not added with `key_user` (a bug in the test).
    pub fn private_key_path(&self, user: &str) -> PathBuf {
        self.user(user)
            .key_path
            .clone()
            .unwrap_or_else(|| panic!("sshd fixture user {user:?} has no key (use key_user)"))
    }

    /// The private key of a [`key_user`](SshdBuilder::key_user), as the
    /// OpenSSH PEM text (`-----BEGIN OPENSSH PRIVATE KEY-----...`).
    ///
    /// # Panics
    ///
    /// If `user` has no key or the key file cannot be read.
    pub fn private_key_pem(&self, user: &str) -> String {
        let path = self.private_key_path(user);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// The uid given to a test user (2001, 2002, ... in the order added).
    ///
    /// # Panics
    ///
    /// If there is no such user.
    pub fn uid(&self, user: &str) -> u32 {
        self.user(user).account.uid
    }

    /// The home directory of a test user (inside [`dir`](Self::dir)).
    ///
    /// # Panics
    ///
    /// If there is no such user.
    pub fn home(&self, user: &str) -> PathBuf {
        self.user(user).account.home.clone()
    }

    /// Pid (in our PID namespace) of the sshd listener; falls back to the pid
    /// of the `unshare` wrapper if the listener was not found.
    pub fn pid(&self) -> u32 {
        self.process
            .sshd_pid
            .unwrap_or_else(|| self.process.child.id())
    }

    /// SIGKILLs the sshd listener, simulating a server crash.
    ///
    /// sshd is the init of its own PID namespace, so the kernel also kills
    /// every per-connection sshd process and user command: established
    /// connections drop. Returns once all of them are gone (bounded wait).
    /// Idempotent; [`Drop`] still cleans up afterwards.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Whether the sshd process tree is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Path of a known_hosts file that holds only [`known_hosts_line`](Self::known_hosts_line).
    pub fn known_hosts_file(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// Path of sshd's log (its stderr, `LogLevel VERBOSE`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    /// The current contents of sshd's log (empty if unreadable).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }
}

impl Drop for Sshd {
    /// SIGTERM, then (after 3 s) SIGKILL, by pid, to the processes this
    /// fixture started; the temp dir is removed afterwards.
    fn drop(&mut self) {
        self.process.terminate();
    }
}

/// Why one start attempt failed.
enum StartError {
    /// sshd could not bind the port (someone took it after `free_port`).
    PortTaken,
    Failed(anyhow::Error),
}

/// The `unshare` wrapper process and the sshd it forked (PID namespace init).
#[derive(Debug)]
struct ServerProcess {
    child: Child,
    sshd_pid: Option<u32>,
    exited: bool,
}

impl ServerProcess {
    /// `binds`: (source, target) files to bind-mount in sshd's mount namespace.
    fn spawn(
        dir: &Path,
        sshd_bin: &Path,
        binds: &[(PathBuf, PathBuf)],
        mount_proc: bool,
    ) -> anyhow::Result<Self> {
        let log = File::create(dir.join("sshd.log")).context("cannot create sshd.log")?;
        let log_out = log.try_clone().context("cannot clone sshd.log handle")?;
        // Paths are passed as positional parameters: no shell quoting issues.
        //
        // Lifeline: our end of the stdin pipe is held (unwritten) by `child`.
        // When it closes, because this fixture was dropped or because the
        // test process died without running destructors (a panic=abort, a
        // runner's SIGKILL), the watcher's `cat` sees EOF and SIGTERMs sshd
        // (PID 1 here, which has a SIGTERM handler), taking the namespace
        // with it, after removing the temp dir that `Drop` would have. So no
        // sshd outlives the test process that started it.
        // Then come (source, target) pairs of extra bind mounts.
        let script = r#"set -e
dir=$1 sshd=$2
shift 2
mount --bind "$dir/passwd" /etc/passwd
mount --bind "$dir/group" /etc/group
mount --bind "$dir/shadow" /etc/shadow
while [ $# -ge 2 ]; do mount --bind "$1" "$2"; shift 2; done
exec 3<&0
(cat <&3 >/dev/null; rm -rf -- "$dir"; kill -TERM 1) &
exec "$sshd" -D -e -f "$dir/sshd_config" </dev/null 3<&-"#;
        let mut unshare = Command::new("unshare");
        unshare.args(["--mount", "--propagation", "private", "--pid", "--fork"]);
        if mount_proc {
            unshare.arg("--mount-proc");
        }
        unshare
            .args(["--kill-child", "--", "/bin/sh", "-c", script, "sshlab-sshd"])
            .arg(dir)
            .arg(sshd_bin);
        for (source, target) in binds {
            unshare.arg(source).arg(target);
        }
        let child = unshare
            .stdin(Stdio::piped())
            .stdout(log_out)
            .stderr(log)
            .spawn()
            .context("cannot spawn `unshare` (util-linux) to start sshd")?;
        Ok(Self {
            child,
            sshd_pid: None,
            exited: false,
        })
    }

    /// Polls until sshd logs "Server listening" and accepts a TCP connection.
    fn wait_ready(&mut self, dir: &Path, port: u16, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        let listening = format!("Server listening on 127.0.0.1 port {port}");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let read_log = || {
            String::from_utf8_lossy(&fs::read(dir.join("sshd.log")).unwrap_or_default())
                .into_owned()
        };
        loop {
            if let Some(status) = self.try_wait() {
                let log = read_log();
                if log.contains("Address already in use") {
                    return Err(StartError::PortTaken);
                }
                return Err(StartError::Failed(anyhow::anyhow!(
                    "sshd exited ({status}) before listening on port {port}; sshd.log tail:\n{}",
                    tail(&log, 30)
                )));
            }
            if read_log().contains(&listening)
                && TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
            {
                self.sshd_pid = child_pid_of(self.child.id());
                if self.sshd_pid.is_none() {
                    tracing::warn!(
                        "could not find the sshd pid under unshare {}",
                        self.child.id()
                    );
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.terminate();
                return Err(StartError::Failed(anyhow::anyhow!(
                    "sshd did not start listening on 127.0.0.1:{port} within {} ms; sshd.log tail:\n{}",
                    timeout.as_millis(),
                    tail(&read_log(), 30)
                )));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Reaps the wrapper if it has exited.
    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited {
            return None;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = true;
                Some(status)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("try_wait on unshare wrapper failed: {e}");
                None
            }
        }
    }

    fn is_running(&mut self) -> bool {
        !self.exited && self.try_wait().is_none()
    }

    /// Waits up to `timeout` for the wrapper to exit.
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.is_running() {
            if Instant::now() >= deadline {
                return false;
            }
            sleep(Duration::from_millis(10));
        }
        true
    }

    /// Signals sshd if it is certainly still ours: the wrapper, its parent,
    /// has not exited, so its pid cannot have been reused.
    fn signal_sshd(&mut self, signal: Signal) {
        if !self.is_running() {
            return;
        }
        let pid = self.sshd_pid.unwrap_or_else(|| self.child.id());
        if let Ok(pid) = i32::try_from(pid)
            && let Err(e) = kill(Pid::from_raw(pid), signal)
        {
            tracing::debug!("kill({pid}, {signal}) failed: {e}");
        }
    }

    /// SIGKILLs the wrapper (our unreaped child: its pid is safe to signal);
    /// `--kill-child` then SIGKILLs sshd, the namespace init.
    fn kill_wrapper(&mut self) {
        if self.is_running() {
            if let Err(e) = self.child.kill() {
                tracing::debug!("killing unshare wrapper failed: {e}");
            }
            if let Err(e) = self.child.wait() {
                tracing::warn!("waiting for unshare wrapper failed: {e}");
            }
            self.exited = true;
        }
    }

    fn kill(&mut self) {
        self.signal_sshd(Signal::SIGKILL);
        if !self.wait_exit(Duration::from_secs(5)) {
            tracing::warn!("sshd did not die within 5 s of SIGKILL; killing its wrapper");
            self.kill_wrapper();
        }
    }

    fn terminate(&mut self) {
        if !self.is_running() {
            return;
        }
        self.signal_sshd(Signal::SIGTERM);
        if !self.wait_exit(TERM_GRACE) {
            tracing::warn!("sshd ignored SIGTERM for {TERM_GRACE:?}; sending SIGKILL");
            self.kill_wrapper();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The pid of the (first) child of `parent`, from /proc.
fn child_pid_of(parent: u32) -> Option<u32> {
    let entries = fs::read_dir("/proc").ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid ...": comm may contain spaces and ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<u32>().ok())
                == Some(parent)
        })
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 5), "");
    }

    #[test]
    fn extra_config_overrides_go_first_and_match_blocks_last() {
        let builder = SshdBuilder::new()
            .extra_config("MaxSessions 2")
            .extra_config("Match User bob")
            .extra_config("  ForceCommand /bin/true");
        let config = builder.sshd_config(Path::new("/tmp/x"), 2222, false);
        let first = config.find("MaxSessions 2").expect("override present");
        let default = config.find("MaxSessions 100").expect("default present");
        assert!(first < default, "{config}");
        assert!(
            config
                .trim_end()
                .ends_with("Match User bob\n  ForceCommand /bin/true")
        );
        assert!(!config.contains("PerSourcePenalties"));
    }

    #[test]
    fn builder_merges_password_and_key_for_one_user() {
        let builder = SshdBuilder::new()
            .password_user("carol", "pw")
            .key_user("carol");
        assert_eq!(builder.users.len(), 1);
        assert!(builder.users[0].key);
        assert!(!format!("{builder:?}").contains("\"pw\""));
    }
}
