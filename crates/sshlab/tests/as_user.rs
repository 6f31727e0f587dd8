//! The host tool as a user runs it, not as the test suite does: from `/` with no checkout, as a
//! normal user, and under `sudo` starting microvm runners for another user. The runners are
//! stand-ins with the interface of microvm.nix's (`bin/virtiofsd-run`, `bin/microvm-run`) that
//! check what the real ones need from the host: the results share's source directory exists and
//! is writable by the user the runner runs as (virtiofsd exits otherwise), the socket group
//! microvm.nix would pass as `--socket-group` is one of that user's groups (virtiofsd chowns its
//! socket to it), and the runner carries the invoking user's supplementary groups (qemu opens
//! `/dev/kvm` through group `kvm`). What the stand-ins check is read from the Nix side itself
//! (`vms/microvm.nix` evaluated with nix-instantiate), so Rust and Nix cannot drift apart
//! unseen. Everything runs in a network namespace the test makes; root needed.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{Netns, lab_copy, text};
use serde_json::Value;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const SSHLAB: &str = env!("CARGO_BIN_EXE_sshlab");
/// The unprivileged user the runners run as (`nobody`: every Debian system has it).
const USER: &str = "nobody";
const UID: u32 = 65534;
/// A supplementary group the test gives `nobody` in a private copy of /etc/group.
const EXTRA_GID: u32 = 4242;

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root");
    false
}

/// A world-readable scratch directory (the runners' user must reach what is inside).
fn scratch(tag: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(&format!("sshlab-asuser-{tag}-"))
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// `nix-instantiate --eval --strict --json -E EXPR`, parsed.
fn nix_eval(expr: &str) -> Value {
    let state = tempfile::tempdir().expect("tempdir");
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", expr])
        .env("NIX_STATE_DIR", state.path())
        .env("NIX_PATH", "")
        .output()
        .expect("nix-instantiate (nix-bin: scripts/install-deps) runs");
    assert!(out.status.success(), "nix eval failed: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("nix output is JSON")
}

/// What the Agent VM's microVM declaration asks of the host, from `vms/microvm.nix` evaluated
/// with the lab files in `lab_dir`: the virtiofs share's source and the socket group that
/// microvm.nix's virtiofsd-run passes (its option `microvm.virtiofsd.group`, default "kvm" in
/// microvm.nix 68c9f9c `nixos-modules/microvm/options.nix`; `null` passes none).
fn agent_share(lab_dir: &Path) -> (PathBuf, Option<String>) {
    let v = nix_eval(&format!(
        r#"let
          lab = import {REPO}/nix/lib/lab.nix {{
            topologyFile = {d}/vms/topology.toml;
            profilesFile = {d}/netem/profiles.toml;
          }};
          m = (import {REPO}/vms/microvm.nix {{ name = "agent"; inherit lab; }}).microvm;
        in {{
          sources = map (s: s.source) (builtins.filter (s: s.proto == "virtiofs") m.shares);
          group = (m.virtiofsd or {{}}).group or "kvm";
        }}"#,
        d = lab_dir.display()
    ));
    let sources = v["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 1, "one virtiofs share (results): {v}");
    let source = PathBuf::from(sources[0].as_str().expect("source is a string"));
    (source, v["group"].as_str().map(str::to_owned))
}

/// A stand-in runner for `vm`, world-readable. `virtiofsd-run` (agent only) does what
/// virtiofsd needs to succeed: its shared directory exists and this user can write into it,
/// and the socket's group is one of this user's groups; it records `id` and makes its socket.
/// `microvm-run` records `id -u` and `id -G`, then serves `GET /health` on the VM's address
/// with busybox httpd (readiness; the target's sshd ports answer TCP the same way).
fn runner(
    dir: &Path,
    vm: &str,
    ip: &str,
    ports: &[u16],
    share: Option<(&Path, Option<&str>)>,
) -> PathBuf {
    let r = dir.join(format!("runner-{vm}"));
    // The runners' user runs and reads all of it, whatever the umask.
    for d in [r.clone(), r.join("bin"), r.join("www")] {
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    for (f, text) in [("health", "healthy\n"), ("metrics", "mcp_ssh_stand_in 1\n")] {
        std::fs::write(r.join("www").join(f), text).expect("write");
        std::fs::set_permissions(
            r.join("www").join(f),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
    }
    let script = |name: &str, body: String| {
        let p = r.join("bin").join(name);
        std::fs::write(&p, format!("#!/bin/sh\nset -u\n{body}")).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    };
    if let Some((source, group)) = share {
        let group_check = group.map_or_else(String::new, |g| {
            format!(
                "gid=$(getent group {g} | cut -d: -f3)\n\
                 case \" $(id -G) \" in *\" $gid \"*) ;; *) echo \"socket group {g} ($gid) is not one of mine: $(id -G)\"; exit 1 ;; esac\n"
            )
        });
        script(
            "virtiofsd-run",
            format!(
                "echo \"virtiofsd uid=$(id -u) groups=$(id -G) cwd=$(pwd)\"\n\
                 [ -d '{src}' ] || {{ echo 'shared dir {src} does not exist'; exit 1; }}\n\
                 echo probe > '{src}/.virtiofsd-probe' || {{ echo 'cannot write {src}'; exit 1; }}\n\
                 {group_check}\
                 touch agent-virtiofs-results.sock\nexec sleep 1000\n",
                src = source.display()
            ),
        );
    }
    let www = r.join("www");
    let serves: String = ports
        .iter()
        // -f: in the foreground, so it stays in the runner's process group (`vm down` stops
        // the group; a daemonized httpd would escape it).
        .map(|p| format!("busybox httpd -f -p {ip}:{p} -h {} &\n", www.display()))
        .collect();
    // vng, which the real runners run, keeps its files under $HOME = the working directory
    // (`sshlab vm runners`) and opens them by their absolute path: every directory above it
    // must let the runner's user through.
    script(
        "microvm-run",
        format!(
            "echo \"{vm}: uid=$(id -u) groups=$(id -G)\"\n\
             export HOME=\"$PWD\"\n\
             mkdir -p \"$HOME/.config/virtme-ng\" && : >\"$HOME/.config/virtme-ng/virtme-ng.conf\" || \
             {{ echo \"{vm}: cannot reach my working directory $HOME by its path\"; exit 1; }}\n\
             {serves}exec sleep 1000\n"
        ),
    );
    r
}

/// Processes whose command line mentions `dir` (the stand-ins run from there): none may be
/// left once `vm down` has run.
fn leftovers(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            // Not the test's own sshlab/ip/unshare invocations (they pass the runner dirs).
            (cmd.contains(&needle) && !cmd.contains("--runner")).then_some(cmd)
        })
        .collect()
}

/// The lab's three stand-in runners as `--runner` flags.
fn runner_flags(dir: &Path, lab_dir: &Path) -> Vec<String> {
    let topology =
        sshlab_core::Topology::load(lab_dir.join("vms/topology.toml")).expect("topology");
    let (source, group) = agent_share(lab_dir);
    let mut flags = Vec::new();
    for vm in &topology.vms {
        let ports: Vec<u16> = vm.services.iter().map(|s| s.port).collect();
        let share = (vm.name == "agent").then_some((source.as_path(), group.as_deref()));
        let r = runner(dir, &vm.name, &vm.ip.to_string(), &ports, share);
        flags.push(format!("--runner={}={}", vm.name, r.display()));
    }
    flags
}

/// A namespace holding the lab's bridge and TAPs (made by `sshlab net up` for `owner`) and the
/// guests' addresses on its loopback, where the stand-ins listen.
fn lab_netns(tag: &str, lab_dir: &Path, owner: u32) -> Option<Netns> {
    let ns = Netns::new(tag)?;
    ns.ip(&["link", "set", "lo", "up"]);
    let out = run(Command::new(SSHLAB)
        .args(["--netns", &ns.name, "--lab"])
        .arg(lab_dir)
        .args(["net", "up", "--no-netem", "--owner", &owner.to_string()]));
    assert!(out.status.success(), "net up: {}", text(&out));
    let topology =
        sshlab_core::Topology::load(lab_dir.join("vms/topology.toml")).expect("topology");
    for vm in &topology.vms {
        ns.ip(&["addr", "add", &format!("{}/32", vm.ip), "dev", "lo"]);
    }
    Some(ns)
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(std::process::Stdio::null())
        .output()
        .expect("run")
}

/// `sshlab ARGS` inside `ns` from `/`, with a private copy of /etc/group that makes `nobody` a
/// member of group `EXTRA_GID`, as the user `as_user` when given (else root), and `env`.
fn sshlab_in(
    ns: &Netns,
    dir: &Path,
    as_user: bool,
    env: &[(&str, &str)],
    args: &[String],
) -> Output {
    let group = dir.join("group");
    if !group.exists() {
        let mut g = std::fs::read_to_string("/etc/group").expect("/etc/group");
        g.push_str(&format!("sshlabtest:x:{EXTRA_GID}:{USER}\n"));
        std::fs::write(&group, g).expect("write");
        std::fs::set_permissions(&group, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let mut inner = format!("mount --bind '{}' /etc/group && exec ", group.display());
    if as_user {
        inner.push_str(&format!(
            "setpriv --reuid={UID} --regid={UID} --init-groups "
        ));
    }
    inner.push_str("env -u SSHLAB_ROOT -u SUDO_UID -u SUDO_GID -u SUDO_USER ");
    for (k, v) in env {
        inner.push_str(&format!("{k}='{v}' "));
    }
    inner.push_str(&format!("'{}'", sshlab_copy(dir).display()));
    for a in args {
        inner.push_str(&format!(" '{a}'"));
    }
    run(&mut in_private_mounts(ns, &inner))
}

/// A copy of `sshlab` in the world-readable scratch dir `dir`: the checkout (and so target/)
/// may sit in a directory only root can enter (CI clones into a mktemp dir, mode 0700).
fn sshlab_copy(dir: &Path) -> PathBuf {
    let bin = dir.join("sshlab");
    if !bin.exists() {
        std::fs::copy(SSHLAB, &bin).expect("copy sshlab");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    bin
}

/// `sh -c SCRIPT` inside `ns` and a private mount namespace of its own, from `/`.
fn in_private_mounts(ns: &Netns, script: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "unshare", "--mount"])
        .args(["--propagation", "private", "sh", "-c", script])
        .current_dir("/");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_results_share_is_handed_over_only_when_safe() {
        use sshlab::vm::invoker::{Credentials, ensure_runtime_dir, prepare_results};
        if !is_root() {
            return;
        }
        let dir = scratch("share");
        let user = Credentials {
            uid: UID,
            gid: UID,
            groups: vec![UID],
        };
        // Missing: created, and owned by the runners' user.
        let fresh = dir.path().join("fresh/results");
        let done = prepare_results(&fresh, Some(&user)).expect("created");
        assert!(done.iter().any(|l| l.starts_with("created")), "{done:?}");
        assert_eq!(std::fs::metadata(&fresh).expect("stat").uid(), UID);
        // A symlink: refused, its target untouched.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).expect("mkdir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).expect("symlink");
        let e = prepare_results(&link, Some(&user)).expect_err("a symlink");
        assert!(e.to_string().contains("symlink"), "{e:#}");
        assert_eq!(std::fs::metadata(&elsewhere).expect("stat").uid(), 0);
        // Root-owned with files in it: not given away; the user cannot write it, so an error.
        let full = dir.path().join("full");
        std::fs::create_dir(&full).expect("mkdir");
        std::fs::write(full.join("keep"), "x").expect("write");
        let e = prepare_results(&full, Some(&user)).expect_err("not writable");
        assert!(e.to_string().contains("not writable by uid 65534"), "{e:#}");
        assert_eq!(std::fs::metadata(&full).expect("stat").uid(), 0);
        // Root-owned and empty: handed over.
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        prepare_results(&empty, Some(&user)).expect("handed over");
        assert_eq!(std::fs::metadata(&empty).expect("stat").uid(), UID);
        // Below a folder the user cannot pass (a 0700 temporary folder): named, not started.
        let closed = dir.path().join("closed");
        std::fs::create_dir(&closed).expect("mkdir");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let e = prepare_results(&closed.join("results"), Some(&user)).expect_err("out of reach");
        assert!(
            e.to_string().contains("out of reach of uid 65534")
                && e.to_string()
                    .contains(&format!("{} (owner uid 0, mode 700)", closed.display())),
            "{e:#}"
        );
        assert!(!closed.join("results").exists(), "created though refused");

        // A runtime root someone else made (a squatted /tmp/sshlab-<uid>) is refused.
        let squatted = dir.path().join("squatted");
        std::fs::create_dir(&squatted).expect("mkdir");
        std::os::unix::fs::chown(&squatted, Some(UID), Some(UID)).expect("chown");
        let e = ensure_runtime_dir(&squatted).expect_err("not ours");
        assert!(e.to_string().contains("not this user's alone"), "{e:#}");
        // Root's are made 0755 (the runners' user passes through), and one an older sshlab
        // left at 0700 is opened to 0755.
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
        let mine = dir.path().join("mine/lab");
        ensure_runtime_dir(&mine).expect("made here");
        assert_eq!(
            (mode(&mine), mode(mine.parent().expect("parent"))),
            (0o755, 0o755)
        );
        std::fs::set_permissions(&mine, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        ensure_runtime_dir(&mine).expect("root's own");
        assert_eq!(mode(&mine), 0o755);
    }

    #[test]
    fn lab_files_are_found_from_the_root_directory_without_a_checkout() {
        // `nix run github:...#...` and the NixOS VM test's shell run from anywhere: the compiled-in
        // lab files must do. A read-only command that needs the lab's files: netem show on lo.
        let out = run(Command::new(SSHLAB)
            .args(["netem", "show", "--dev", "lo", "--json"])
            .current_dir("/")
            .env_remove("SSHLAB_ROOT"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        let ports: Vec<u64> = v["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("no rows: {v}"))
            .iter()
            .filter_map(|p| p["want"]["port"].as_u64())
            .collect();
        assert!(ports.contains(&2322), "{v}");
        // Not applied on lo: exit 3, as documented.
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    }

    #[test]
    fn under_sudo_the_runners_get_the_user_a_writable_share_and_its_groups() {
        if !is_root() {
            return;
        }
        let dir = scratch("sudo");
        let results = dir.path().join("var/lib/sshlab/results");
        let lab_dir = lab_copy(&dir.path().join("lab"), &results);
        let (source, _) = agent_share(&lab_dir);
        assert_eq!(
            source, results,
            "Nix shares the topology's results directory"
        );
        let Some(ns) = lab_netns("sudo", &lab_dir, UID) else {
            return;
        };
        // `net up` made it for the user; `vm up` must make it too (e.g. after a reboot: /run is
        // gone, /var/lib stays, but a user may have removed it).
        std::fs::remove_dir(&results).expect("net up created the results directory");
        let sudo = [
            ("SUDO_UID", "65534"),
            ("SUDO_GID", "65534"),
            ("SUDO_USER", USER),
        ];
        let mut args = vec![
            "--lab".to_owned(),
            lab_dir.display().to_string(),
            "--netns".into(),
            ns.name.clone(),
        ];
        args.extend([
            "vm".into(),
            "up".into(),
            "--backend".into(),
            "microvm".into(),
            "--ready-timeout".into(),
            "20".into(),
        ]);
        args.extend(runner_flags(dir.path(), &lab_dir));
        let up = sshlab_in(&ns, dir.path(), false, &sudo, &args);
        let runtime = PathBuf::from("/run/sshlab").join(&ns.name);
        let logs = |runtime: &Path| -> String {
            ["target", "mcp", "agent", "agent-virtiofsd"]
                .iter()
                .map(|v| {
                    let p = runtime.join(format!("{v}.log"));
                    format!(
                        "--- {v}\n{}",
                        std::fs::read_to_string(p).unwrap_or_default()
                    )
                })
                .collect()
        };
        let down_args = |extra: &[&str]| -> Vec<String> {
            let mut a = vec![
                "--lab".to_owned(),
                lab_dir.display().to_string(),
                "--netns".into(),
                ns.name.clone(),
                "vm".into(),
            ];
            a.extend(extra.iter().map(|s| (*s).to_owned()));
            a
        };
        let ok = up.status.success();
        let agent_log = logs(&runtime);
        let down = sshlab_in(&ns, dir.path(), false, &sudo, &down_args(&["down"]));
        assert!(ok, "vm up: {}\n{agent_log}", text(&up));
        assert!(down.status.success(), "vm down: {}", text(&down));
        assert_eq!(
            leftovers(dir.path()),
            Vec::<String>::new(),
            "vm down left processes"
        );
        let _ = std::fs::remove_dir_all(&runtime);
        // The share was created for the user, and the user's virtiofsd wrote into it.
        let meta = std::fs::metadata(&results).expect("vm up created the results directory");
        assert_eq!(meta.uid(), UID, "results directory owner");
        assert!(results.join(".virtiofsd-probe").is_file(), "{agent_log}");
        // Every runner ran as the user, with the user's supplementary groups.
        for vm in ["target:", "mcp:", "agent:"] {
            let line = agent_log
                .lines()
                .find(|l| l.starts_with(vm))
                .unwrap_or_else(|| panic!("no {vm} line in the logs:\n{agent_log}"));
            assert!(line.contains(&format!("uid={UID} ")), "{line}");
            assert!(
                line.contains(&EXTRA_GID.to_string()),
                "supplementary group missing: {line}"
            );
        }
        // `vm up` printed where the results go: the directory Nix shares into the Agent VM.
        let stdout = String::from_utf8_lossy(&up.stdout);
        assert!(
            stdout.contains(&format!("results {}", results.display())),
            "{stdout}"
        );
    }

    #[test]
    fn a_normal_user_runs_the_lab_in_its_own_runtime_dir() {
        if !is_root() {
            return;
        }
        let dir = scratch("user");
        let xdg = dir.path().join("xdg");
        std::fs::create_dir_all(&xdg).expect("mkdir");
        std::os::unix::fs::chown(&xdg, Some(UID), Some(UID)).expect("chown");
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        // `sudo sshlab net up --owner` (lab_netns) creates the results directory for the user.
        let results = dir.path().join("results");
        let lab_dir = lab_copy(&dir.path().join("lab"), &results);
        let Some(ns) = lab_netns("user", &lab_dir, UID) else {
            return;
        };
        let env = [("XDG_RUNTIME_DIR", xdg.to_str().expect("utf-8"))];
        let base = vec!["--lab".to_owned(), lab_dir.display().to_string()];
        let with = |extra: &[&str]| -> Vec<String> {
            let mut a = base.clone();
            a.extend(extra.iter().map(|s| (*s).to_owned()));
            a
        };
        let mut up_args = with(&["vm", "up", "--backend", "microvm", "--ready-timeout", "20"]);
        up_args.extend(runner_flags(dir.path(), &lab_dir));
        let up = sshlab_in(&ns, dir.path(), true, &env, &up_args);
        let runtime = xdg.join("sshlab/default");
        let status = sshlab_in(
            &ns,
            dir.path(),
            true,
            &env,
            &with(&["vm", "status", "--json"]),
        );
        // Root finds the user's lab too (`sudo -E`: SUDO_UID and the user's XDG_RUNTIME_DIR).
        let root_status = sshlab_in(
            &ns,
            dir.path(),
            false,
            &[
                ("SUDO_UID", "65534"),
                ("SUDO_GID", "65534"),
                ("SUDO_USER", USER),
                ("XDG_RUNTIME_DIR", xdg.to_str().expect("utf-8")),
            ],
            &with(&["vm", "status", "--json"]),
        );
        let down = sshlab_in(&ns, dir.path(), true, &env, &with(&["vm", "down"]));
        let left = leftovers(dir.path());
        assert!(up.status.success(), "vm up as a user: {}", text(&up));
        assert!(
            status.status.success(),
            "vm status as the user: {}",
            text(&status)
        );
        assert!(
            root_status.status.success(),
            "vm status as root: {}",
            text(&root_status)
        );
        assert!(
            down.status.success(),
            "vm down as the user: {}",
            text(&down)
        );
        assert_eq!(left, Vec::<String>::new(), "vm down left processes");
        assert!(
            !runtime.join("state.json").exists(),
            "down removed the state"
        );
        assert!(
            runtime.join("agent.log").is_file(),
            "logs stay in {}",
            runtime.display()
        );
        assert!(results.join(".virtiofsd-probe").is_file());
    }

    /// What a step script of [`from_no_state`] gets: the world-readable scratch dir, `sshlab`
    /// (a copy in it) and the stand-in runners' `--runner` flags.
    struct Fresh {
        dir: PathBuf,
        sshlab: PathBuf,
        runners: Vec<String>,
    }

    /// Issue 21: runs `steps` (shell; `step NAME CMD...` records a step's exit code and
    /// output, `modes` the mode, owner and path of every directory the lab makes, `$sudo` is
    /// `env SUDO_UID=.. SUDO_GID=.. SUDO_USER=..` of the runners' user) from no state at all (an
    /// empty tmpfs over `/run` and `/var/lib` in a private mount namespace: no `/run/sshlab`, no
    /// `/var/lib/sshlab`), under `umask`, inside a network namespace with the lab's addresses on
    /// lo, where the stand-in runners listen. Returns the steps and the modes.
    fn from_no_state(
        umask: &str,
        steps: impl Fn(&Fresh) -> String,
    ) -> (Vec<(String, i32, String)>, Vec<String>) {
        let dir = scratch(&format!("fresh{umask}"));
        let ns = Netns::new(&format!("fresh{umask}")).expect("root");
        ns.ip(&["link", "set", "lo", "up"]);
        let topology = sshlab_core::Topology::load(Path::new(REPO).join("vms/topology.toml"))
            .expect("topology");
        for vm in &topology.vms {
            ns.ip(&["addr", "add", &format!("{}/32", vm.ip), "dev", "lo"]);
        }
        // The compiled-in lab files: the results directory is the real /var/lib/sshlab/results.
        let fresh = Fresh {
            dir: dir.path().to_owned(),
            sshlab: sshlab_copy(dir.path()),
            runners: runner_flags(dir.path(), Path::new(REPO)),
        };
        let out = dir.path().join("out");
        std::fs::create_dir(&out).expect("mkdir");
        let o = out.display();
        let script = format!(
            r#"set -u
umask {umask}
unset SUDO_UID SUDO_GID SUDO_USER SSHLAB_ROOT XDG_RUNTIME_DIR SSHLAB_VM_BACKEND
mount -t tmpfs -o mode=0755 sshlab-r21-run /run
mount -t tmpfs -o mode=0755 sshlab-r21-varlib /var/lib
step() {{ name=$1; shift; "$@" >"{o}/$name.out" 2>&1; echo "$name $?" >>"{o}/rc"; }}
modes() {{
  for p in /run/sshlab /run/sshlab/default /run/sshlab/default/state.json \
    /run/sshlab/default/microvm /run/sshlab/default/microvm/* /var/lib/sshlab /var/lib/sshlab/results; do
    stat -c '%a %u %n' "$p"
  done >"{o}/modes" 2>&1
}}
sudo="env SUDO_UID={UID} SUDO_GID={UID} SUDO_USER={USER}"
{}"#,
            steps(&fresh)
        );
        let status = in_private_mounts(&ns, &script)
            .status()
            .expect("run the script");
        assert!(status.success(), "the script itself failed: {status}");
        let rc = std::fs::read_to_string(out.join("rc")).unwrap_or_default();
        let steps = rc
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(name, code)| {
                let text =
                    std::fs::read_to_string(out.join(format!("{name}.out"))).unwrap_or_default();
                (name.to_owned(), code.parse().unwrap_or(-1), text)
            })
            .collect();
        let modes = std::fs::read_to_string(out.join("modes"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            leftovers(dir.path()),
            Vec::<String>::new(),
            "processes left"
        );
        (steps, modes)
    }

    /// The steps and modes as one text, for failure messages.
    fn report(steps: &[(String, i32, String)], modes: &[String]) -> String {
        steps
            .iter()
            .map(|(n, c, t)| format!("--- {n}: exit {c}\n{t}"))
            .collect::<String>()
            + &format!("--- modes\n{}\n", modes.join("\n"))
    }

    /// `sudo sshlab net up --owner` (which makes the results directory), `sudo sshlab vm up
    /// --backend microvm` for that user (stand-in runners that reach their working directory
    /// by its absolute path, as vng does), `vm status` as the user (root's lab is found and
    /// read), `vm down`, `net down`, from no state under umask 077 and 022.
    #[test]
    fn r21_from_no_state_under_umask_077_and_022() {
        if !is_root() {
            return;
        }
        for umask in ["077", "022"] {
            let (steps, modes) = from_no_state(umask, |f| {
                let sh = f.sshlab.display();
                format!(
                    "step net-up {sh} net up --no-netem --owner {UID}\n\
                     step vm-up $sudo {sh} vm up --backend microvm --ready-timeout 20 {}\n\
                     step status-as-user setpriv --reuid={UID} --regid={UID} --clear-groups {sh} vm status --json\n\
                     modes\n\
                     step vm-down $sudo {sh} vm down\n\
                     step net-down {sh} net down\n",
                    f.runners.join(" ")
                )
            });
            let report = report(&steps, &modes);
            println!("umask {umask}:\n{report}");
            let names: Vec<&str> = steps.iter().map(|(n, _, _)| n.as_str()).collect();
            assert_eq!(
                names,
                ["net-up", "vm-up", "status-as-user", "vm-down", "net-down"],
                "umask {umask}: {report}"
            );
            for (name, code, _) in &steps {
                assert_eq!(*code, 0, "umask {umask}: {name} failed:\n{report}");
            }
            // Explicit modes whatever the umask: root's runtime directories let the runners'
            // user through (and its `vm status` read the state), the runner's working
            // directory is the user's alone, the results directory and its parent are
            // reachable, the results directory the user's.
            let want = [
                "755 0 /run/sshlab".to_owned(),
                "755 0 /run/sshlab/default".to_owned(),
                "644 0 /run/sshlab/default/state.json".to_owned(),
                "755 0 /run/sshlab/default/microvm".to_owned(),
                format!("700 {UID} /run/sshlab/default/microvm/agent"),
                format!("700 {UID} /run/sshlab/default/microvm/mcp"),
                format!("700 {UID} /run/sshlab/default/microvm/target"),
                "755 0 /var/lib/sshlab".to_owned(),
                format!("755 {UID} /var/lib/sshlab/results"),
            ];
            assert_eq!(modes, want, "umask {umask}: {report}");
        }
    }

    /// Every command of nix/apps.nix that needs no real guest runs here as `nix run` would run
    /// it: the app's own text (nix/tests/apps.nix, evaluated from nix/apps.nix), the package's
    /// sshlab and the runners replaced by this build's and the stand-ins, under sudo where the
    /// README says `sudo`, from no state under umask 077. The `run` apps need real guests and an
    /// agent: lab_microvm runs `run quick` on the same runner interface.
    #[test]
    fn r21_the_apps_commands_run_here() {
        if !is_root() {
            return;
        }
        let apps = nix_eval(&format!("import {REPO}/nix/tests/apps.nix"));
        let (steps, modes) = from_no_state("077", |f| {
            let app_dir = f.dir.join("apps");
            std::fs::create_dir_all(&app_dir).expect("mkdir");
            let text_of = |name: &str| -> String {
                let mut t = apps[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("no app {name} in nix/apps.nix"))
                    .replace(
                        "/nix/store/stub-sshlab/bin/sshlab",
                        &f.sshlab.display().to_string(),
                    );
                for flag in &f.runners {
                    let (vm, path) = flag
                        .trim_start_matches("--runner=")
                        .split_once('=')
                        .expect("VM=PATH");
                    t = t.replace(&format!("/nix/store/stub-runner-{vm}"), path);
                }
                assert!(!t.contains("/nix/store"), "{name}: {t}");
                let p = app_dir.join(name);
                std::fs::write(&p, t).expect("write");
                p.display().to_string()
            };
            [
                // README: `sudo nix run .#ssh-network-setup` (--no-netem: no sch_netem here).
                format!(
                    "step ssh-network-setup $sudo bash {} --no-netem",
                    text_of("ssh-network-setup")
                ),
                format!(
                    "step ssh-vm-start-all $sudo bash {} --ready-timeout 20",
                    text_of("ssh-vm-start-all")
                ),
                format!("step ssh-vm-status $sudo bash {}", text_of("ssh-vm-status")),
                format!(
                    "step ssh-loadtest-list bash {}",
                    text_of("ssh-loadtest-list")
                ),
                format!(
                    "step ssh-loadtest-metrics bash {}",
                    text_of("ssh-loadtest-metrics")
                ),
                "modes".to_owned(),
                format!("step ssh-vm-stop $sudo bash {}", text_of("ssh-vm-stop")),
                format!(
                    "step ssh-network-teardown $sudo bash {}",
                    text_of("ssh-network-teardown")
                ),
            ]
            .join("\n")
        });
        let report = report(&steps, &modes);
        println!("{report}");
        for (name, code, _) in &steps {
            assert_eq!(*code, 0, "{name} failed:\n{report}");
        }
        assert_eq!(steps.len(), 7, "{report}");
        let text = |n: &str| &steps.iter().find(|(s, _, _)| s == n).expect("step").2;
        assert!(
            text("ssh-vm-start-all").contains("ready; state /run/sshlab/default/state.json"),
            "{report}"
        );
        assert!(text("ssh-loadtest-list").contains("quick"), "{report}");
        assert_eq!(
            text("ssh-loadtest-metrics"),
            "mcp_ssh_stand_in 1\n",
            "{report}"
        );
        assert!(
            modes.contains(&format!("755 {UID} /var/lib/sshlab/results")),
            "{report}"
        );
    }
}
