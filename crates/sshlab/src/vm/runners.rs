//! `sshlab vm runners DIR`: microvm runners without Nix. Nix builds one runner per VM
//! (microvm.nix 68c9f9c `lib/runner.nix`): a directory whose `bin/microvm-run` starts the
//! hypervisor and, for a VM with virtiofs shares, whose `bin/virtiofsd-run` starts virtiofsd
//! (`nixos-modules/microvm/virtiofsd/default.nix`), both run from the runner's working
//! directory, where the share's socket lives (`<hostName>-virtiofs-<tag>.sock`,
//! `nixos-modules/microvm/options.nix`). This builds the same interface around the qemu
//! backend's guests, so `vm up --backend microvm` runs its own code (runner discovery, the
//! unprivileged user, virtiofsd-run before microvm-run, process groups, readiness, logs) against
//! real hypervisor processes and a real virtiofsd:
//!
//! - `DIR/store/`: what a Nix store would hold, readable by any user (the runners run as the
//!   user who ran `sudo sshlab vm up`): the Debian kernel (an extracted one as `kernel/boot/`,
//!   its modules linked in `kernel/lib/modules/`), sshlab, mcp-ssh-server,
//!   sshlab-agent, virtiofsd, and the lab files;
//! - `DIR/<vm>/bin/microvm-run`: `vng` booting the guest as the qemu backend does, except that
//!   the Agent VM's results share is a vhost-user-fs device on virtiofsd's socket (microvm.nix's
//!   qemu runner: memfd memory, `-chardev socket`, `-device vhost-user-fs-pci`), which the
//!   guest mounts on the results path;
//! - `DIR/agent/bin/virtiofsd-run`: virtiofsd on the topology's `[results] host`, with
//!   microvm.nix's flags. One share, so no supervisord around it;
//! - the target's and the MCP server's control port ([`super::control`]) on `control.sock` in
//!   the runner's working directory, as vms/control.nix gives the Nix-built runners.
//!
//! The accelerator is chosen once, here ([`super::accel::detect`]), as Nix fixes a
//! runner's hypervisor flags at build time.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sshlab_core::{Lab, Topology, guest_kernel};

use super::accel::{self, Accel};
use super::error::Error;
use super::qemu::{self, GuestSpec, ResultsShare};
use super::{VmConfig, hypervisor, on_path, roles};

/// The share's tag (nix/lib/lab.nix `microvmFor`: `tag = "results"`).
pub const RESULTS_TAG: &str = "results";

/// The marker file that says a directory holds runners this command built (and may be rebuilt).
const MARKER: &str = "sshlab-runners";

/// What [`build`] made.
#[derive(Debug, Clone)]
pub struct Runners {
    /// The accelerator baked into every `microvm-run`.
    pub accel: Accel,
    /// Why that one.
    pub accel_why: String,
    /// `(vm, runner directory)` in start order.
    pub runners: Vec<(String, PathBuf)>,
}

/// microvm.nix's socket name for a share: `<hostName>-virtiofs-<tag>.sock` (our hostName is the
/// VM's name, `vms/<vm>.nix`).
pub fn socket_name(vm: &str, tag: &str) -> String {
    format!("{vm}-virtiofs-{tag}.sock")
}

/// `s` quoted for `sh` (single quotes).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes `text` to `path` with `mode`.
fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    super::dirs::write_file(path, text.as_bytes(), mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Copies `from` into `dir` as `name` with `mode` (the original may be root's alone, as
/// Debian's /boot/vmlinuz-* is).
fn install(from: &Path, dir: &Path, name: &str, mode: u32) -> anyhow::Result<PathBuf> {
    let to = dir.join(name);
    std::fs::copy(from, &to)
        .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", to.display()))?;
    Ok(to)
}

/// `mkdir -p` with mode 0755 on every directory it makes (whatever the umask; the runners'
/// user must pass through each), and on `dir` itself.
fn make_dir(dir: &Path) -> anyhow::Result<()> {
    super::dirs::create_dir_all(dir, 0o755)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot chmod {}", dir.display()))
}

/// `dir` is new, empty, or an earlier runner set (then cleared); anything else is refused.
fn claim(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", dir.display())),
        Ok(mut entries) => {
            if entries.next().is_none() {
                return Ok(());
            }
            if !dir.join(MARKER).is_file() {
                bail!(Error::Input(format!(
                    "{} is not empty and holds no runners built by `sshlab vm runners`; \
                     give a new directory",
                    dir.display()
                )));
            }
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear the old runners in {}", dir.display()))
        }
    }
}

/// Builds the three runners in `dir` (see the module's documentation).
pub fn build(dir: &Path, cfg: &VmConfig, lab: &Lab) -> anyhow::Result<Runners> {
    let topology: &Topology = &lab.topology;
    // Everything is checked before anything is written.
    let tools = qemu::check_tools()?;
    let virtiofsd = on_path("virtiofsd")
        .or_else(|| Some(PathBuf::from("/usr/libexec/virtiofsd")).filter(|p| p.is_file()))
        .ok_or_else(|| {
            Error::Missing(
                "virtiofsd is not installed (scripts/install-deps vm installs it into \
                 /opt/sshlab-tools/bin for root, ~/.cache/sshlab-tools/bin for others)"
                    .into(),
            )
        })?;
    let bins = roles::Bins::find(cfg.bin_dir.as_deref())?;
    let sshlab = std::env::current_exe().context("the sshlab binary's path")?;
    let release = guest_kernel::release(&tools.kernel)
        .with_context(|| format!("no kernel release in {}", tools.kernel.display()))?
        .to_owned();
    for vm in hypervisor::START_ORDER {
        topology
            .vm(vm)
            .with_context(|| format!("no VM {vm} in the topology"))?;
    }
    let dir =
        std::path::absolute(dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    qemu::plain_path("the runners' directory", &dir)?;
    claim(&dir)?;

    let store = dir.join("store");
    let store_bin = store.join("bin");
    make_dir(&store_bin)?;
    write_file(
        &dir.join(MARKER),
        "microvm runners built by `sshlab vm runners`\n",
        0o644,
    )?;
    // The kernel. One of the machine's own (`/boot`, modules in `/lib/modules`) is copied flat
    // into the store, and virtme-ng, walking up from it, finds the host root's modules. One
    // extracted elsewhere keeps its package layout, `boot/` beside `lib/modules/<release>`
    // (linked), since virtme-ng takes the modules from the root the image is in.
    let modules = guest_kernel::modules_dir(&tools.kernel)
        .with_context(|| format!("no modules directory for {}", tools.kernel.display()))?;
    let kernel = if modules.starts_with(guest_kernel::MODULES) {
        install(&tools.kernel, &store, &format!("vmlinuz-{release}"), 0o644)?
    } else {
        let store_kernel = store.join("kernel");
        make_dir(&store_kernel.join("boot"))?;
        make_dir(&store_kernel.join("lib/modules"))?;
        let link = store_kernel.join("lib/modules").join(&release);
        std::os::unix::fs::symlink(&modules, &link)
            .with_context(|| format!("cannot link {} to {}", link.display(), modules.display()))?;
        install(
            &tools.kernel,
            &store_kernel.join("boot"),
            &format!("vmlinuz-{release}"),
            0o644,
        )?
    };
    let guest_sshlab = install(&sshlab, &store_bin, "sshlab", 0o755)?;
    install(&bins.mcp, &store_bin, "mcp-ssh-server", 0o755)?;
    install(&bins.agent, &store_bin, "sshlab-agent", 0o755)?;
    let virtiofsd = install(&virtiofsd, &store_bin, "virtiofsd", 0o755)?;
    // The lab the runners were built for, as Nix bakes it in.
    let lab_dir = store.join("lab");
    for (file, builtin) in [
        (Lab::TOPOLOGY_FILE, Lab::BUILTIN_TOPOLOGY),
        (Lab::NETEM_FILE, Lab::BUILTIN_NETEM),
    ] {
        let text = match &cfg.lab_dir {
            Some(d) => std::fs::read_to_string(d.join(file))
                .with_context(|| format!("cannot read {}", d.join(file).display()))?,
            None => builtin.to_owned(),
        };
        let to = lab_dir.join(file);
        make_dir(to.parent().unwrap_or(&lab_dir))?;
        write_file(&to, &text, 0o644)?;
    }

    // The runtime root keeps the accelerator's verdict for the `vm up` that follows.
    let root = cfg.invoker.runtime_root();
    let _ = super::invoker::ensure_runtime_dir(&root);
    let (accel, accel_why) = accel::detect(&tools.kernel, &tools.vng, &root);
    let vng = qemu::plain_path("vng", &tools.vng)?;
    let socket = socket_name("agent", RESULTS_TAG);
    let mut runners = Vec::new();
    for vm in hypervisor::START_ORDER {
        let runner = dir.join(vm);
        let bin = runner.join("bin");
        make_dir(&bin)?;
        let spec = GuestSpec {
            kernel: &kernel,
            accel,
            sshlab: &guest_sshlab,
            lab_dir: Some(&lab_dir),
            bin_dir: Some(&store_bin),
            results: &topology.results.host,
            unstable_every: cfg.unstable_every,
            netem_in_guest: false,
            share: ResultsShare::Virtiofs {
                socket: &socket,
                tag: RESULTS_TAG,
            },
            driver_shell: None,
            // As vms/control.nix adds to microvm.nix's qemu: the port the host's faults use,
            // on a socket in the runner's working directory.
            control: (vm != "agent").then_some(Path::new(super::control::SOCKET)),
        };
        let args: Vec<String> = qemu::vng_args(&spec, topology, vm)?
            .iter()
            .map(|a| sh_quote(a))
            .collect();
        write_file(
            &bin.join("microvm-run"),
            &format!(
                "#!/bin/sh\n\
                 # VM {vm}: microvm.nix's runner interface around the qemu backend's guest\n\
                 # (built by `sshlab vm runners`, {accel}).\n\
                 set -eu\n\
                 # vng keeps per-user files under $HOME; the runner's user may have none.\n\
                 export HOME=\"$PWD\"\n\
                 exec {vng} {}\n",
                args.join(" "),
                accel = accel.as_str(),
                vng = sh_quote(&vng),
            ),
            0o755,
        )?;
        if vm == "agent" {
            let source = qemu::plain_path("[results] host", &topology.results.host)?;
            write_file(
                &bin.join("virtiofsd-run"),
                &format!(
                    "#!/bin/sh\n\
                     # The results share, with microvm.nix 68c9f9c's virtiofsd flags\n\
                     # (nixos-modules/microvm/virtiofsd/default.nix; one share, no supervisord).\n\
                     set -eu\n\
                     if [ \"$(id -u)\" = 0 ]; then\n\
                     \x20 OPT_RLIMIT=\"--rlimit-nofile 1048576\"\n\
                     else\n\
                     \x20 OPT_RLIMIT=\"\"\n\
                     fi\n\
                     exec {virtiofsd} --socket-path={socket} --shared-dir={source} \
                     $OPT_RLIMIT --thread-pool-size \"$(nproc)\" --posix-acl --xattr\n",
                    virtiofsd = sh_quote(&virtiofsd.display().to_string()),
                    socket = sh_quote(&socket),
                    source = sh_quote(&source),
                ),
                0o755,
            )?;
        }
        runners.push((vm.to_owned(), runner));
    }
    Ok(Runners {
        accel,
        accel_why,
        runners,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_socket_has_microvm_nix_s_name() {
        assert_eq!(
            socket_name("agent", "results"),
            "agent-virtiofs-results.sock"
        );
    }

    #[test]
    fn only_an_empty_dir_or_old_runners_are_claimed() {
        let d = tempfile::tempdir().unwrap();
        claim(&d.path().join("new")).unwrap();
        claim(d.path()).unwrap();
        std::fs::write(d.path().join("precious"), "x").unwrap();
        let e = claim(d.path()).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        assert!(d.path().join("precious").exists());
        std::fs::write(d.path().join(MARKER), "").unwrap();
        claim(d.path()).unwrap();
        assert!(!d.path().exists());
    }
}
