//! `sshlab`, the host tool of the lab.
//!
//! Implemented: `net up|down|status` (bridge and TAPs, [`net`]) and `netem apply|clear|show`
//! (per-port tc netem over netlink, [`netem`]), `vm up|down|status|logs` on the netns and
//! microvm backends ([`vm`]), `run`, `list`, `metrics`, `report` ([`runjob`]). The flow is the same for every command: clap parses and validates ([`Opts`]),
//! [`run`] loads the lab's configuration, resolves a plan from it, enters the requested network
//! namespace ([`netns`]) while the process is still single-threaded, and only then starts a
//! single-threaded tokio runtime whose netlink socket therefore lives in that namespace.
#![deny(missing_docs)]

pub mod agent_clock;
pub mod dashboard;
pub mod http;
pub mod interrupt;
pub mod net;
pub mod netem;
pub mod netns;
pub mod runjob;
pub mod vm;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sshlab_core::Lab;
use sshlab_core::scenario;

/// Command line of `sshlab`.
#[derive(Debug, Parser)]
#[command(name = "sshlab", version, about = "Host tool of the sshlab lab")]
pub struct Opts {
    /// A directory holding vms/topology.toml and netem/profiles.toml, e.g. a checkout you
    /// edited (default: the lab files compiled into this build; the current directory never
    /// matters).
    #[arg(long, global = true, env = "SSHLAB_ROOT", value_name = "DIR")]
    pub lab: Option<PathBuf>,
    /// Work inside this existing network namespace (`ip netns add NAME`) instead of the
    /// current one.
    #[arg(long, global = true, value_name = "NAME")]
    pub netns: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The host's bridge and TAPs (root).
    #[command(subcommand)]
    Net(NetCommand),
    /// Per-port delay, jitter and loss from netem/profiles.toml (root).
    Netem {
        /// What to do.
        #[command(subcommand)]
        action: NetemAction,
        /// Where and how.
        #[command(flatten)]
        target: NetemTarget,
    },
    /// The lab's three VMs (root for the netns backend; microvm needs `sshlab net up`).
    Vm {
        /// What to do.
        #[command(subcommand)]
        action: VmAction,
        /// Where and how.
        #[command(flatten)]
        opts: VmOpts,
    },
    /// Run a scenario (or `quick`, `full`) through the agent; boots the lab if needed.
    Run {
        /// Scenario: quick, full, or one of `sshlab list`.
        scenario: String,
        /// Seconds per phase.
        duration: Option<u64>,
        /// Workers.
        workers: Option<usize>,
        /// Open model: arrivals per second for every phase (overrides the scenario's rate;
        /// turns a closed scenario open).
        #[arg(long)]
        rate: Option<f64>,
        /// Threshold, e.g. `errors<1%` (repeatable).
        #[arg(long = "threshold")]
        thresholds: Vec<String>,
        /// The target port the scenario runs against (default: the baseline, 2222): one of
        /// the lab's target ports, e.g. `--port 2322` for the baseline sshd behind netem's
        /// 100 ms (`sshlab run capacity --port 2322`). Refused for scenarios that choose their
        /// own ports (latency_test, and so full).
        #[arg(long)]
        port: Option<u16>,
        /// A capacity search's SLO bound, e.g. `p99<1s` (repeatable; instead of the scenario's
        /// `[capacity] slo`; only for a capacity scenario such as `capacity`).
        #[arg(long = "slo")]
        slo: Vec<String>,
        /// Leave the lab up when this run booted it.
        #[arg(long)]
        keep: bool,
        /// Seconds a job may take before it is cancelled.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// A fault during the run, `KIND:TARGET@START+DURATION` (repeatable): `sshd-kill:2222`,
        /// `partition:target`, `mcp-pause`, `mcp-restart`, `netem:2322:delay=200ms,loss=5%`;
        /// START and DURATION like `20s`, `500ms`, `1m`. Reverted at its end, on Ctrl-C and on
        /// any error; recorded and judged in the results (FAULTS, recovery time).
        #[arg(long = "fault")]
        faults: Vec<sshlab_core::faults::FaultSpec>,
        /// Forward the Agent VM's live dashboard (and its Prometheus /metrics) to ADDR on this
        /// machine: PORT, IP:PORT or `[IPv6]:PORT` (default 127.0.0.1:5665); the URL is printed
        /// when the run starts. Loopback unless --dashboard-public.
        #[arg(
            long,
            value_name = "ADDR",
            num_args = 0..=1,
            default_missing_value = "127.0.0.1:5665"
        )]
        dashboard: Option<String>,
        /// Allow a --dashboard address that is not loopback: anyone who reaches it can watch
        /// the run and stop it.
        #[arg(long, requires = "dashboard")]
        dashboard_public: bool,
        /// Where and how.
        #[command(flatten)]
        opts: VmOpts,
    },
    /// The scenarios `run` knows.
    List,
    /// Scrape and print the MCP server's /metrics.
    Metrics,
    /// A qemu-backend guest's init (run inside the guest by `vm up --backend qemu`).
    #[command(hide = true)]
    Guest {
        /// The VM this guest is.
        #[arg(value_parser = ["agent", "mcp", "target"])]
        vm: String,
        /// Results directory (agent).
        #[arg(long)]
        results: PathBuf,
        /// Where mcp-ssh-server and sshlab-agent are.
        #[arg(long)]
        bin_dir: Option<PathBuf>,
        /// Restart period of the unstable sshd, seconds (target).
        #[arg(long, default_value_t = 30)]
        unstable_every: u64,
        /// Apply netem/profiles.toml to the guest's own NIC: the target's every profile
        /// (`--match sport`), the MCP guest's those shaped both ways (`--match dport`).
        #[arg(long)]
        netem: bool,
        /// Mount the virtiofs share with this tag on `--results` first (microvm runners).
        #[arg(long, value_name = "TAG")]
        virtiofs: Option<String>,
        /// The name the lab's NIC gets.
        #[arg(long, default_value = vm::net::INNER_IFNAME)]
        ifname: String,
        /// Serve the host's fault commands on the virtio port `sshlab.control`.
        #[arg(long)]
        control: bool,
        /// Serve the NixOS test driver's root shell on the virtio port `sshlab.shell`.
        #[arg(long)]
        shell: bool,
    },
    /// A NixOS microVM's fault executor (vms/control.nix's service): serves the host's fault
    /// commands on the virtio port `sshlab.control` with systemctl on the role's units.
    #[command(hide = true)]
    GuestControl {
        /// The VM this guest is.
        #[arg(value_parser = ["mcp", "target"])]
        vm: String,
        /// The guest's systemctl.
        #[arg(long, default_value = "systemctl")]
        systemctl: PathBuf,
        /// `PORT=UNIT`: the target's sshd of base port PORT is systemd unit UNIT (repeatable).
        #[arg(long = "sshd-unit", value_name = "PORT=UNIT", value_parser = parse_port_unit)]
        sshd_units: Vec<(u16, String)>,
        /// mcp-ssh-server's systemd unit.
        #[arg(long, value_name = "UNIT")]
        mcp_unit: Option<String>,
        /// Where the units a fault keeps down are flagged.
        #[arg(long, value_name = "DIR", default_value = vm::control::DOWN_DIR)]
        down_dir: PathBuf,
    },
    /// Re-render report.txt, report.html and junit.xml from a results directory's summary.json,
    /// optionally against a baseline run (exit 99 when a regression bound is crossed).
    Report {
        /// A results directory (results/<test_id>).
        dir: PathBuf,
        /// A baseline run's results directory: the reports show this run against it.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// `[op.]metric=+N%` bound on the change from the baseline (repeatable).
        #[arg(long = "max-regression", requires = "baseline")]
        bounds: Vec<sshlab_core::results::compare::Bound>,
    },
}

/// `sshlab vm ...`
#[derive(Debug, Clone, Subcommand)]
pub enum VmAction {
    /// Boot the three VMs (target, mcp, agent) and wait until each is ready.
    Up,
    /// Stop what `up` started and remove what it created.
    Down,
    /// Each VM's network, processes and readiness. Exits 3 when not up or not ready.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Without Nix: build runners with microvm.nix's interface (`<vm>/bin/microvm-run`, and the
    /// Agent's `bin/virtiofsd-run` for the results share) that boot the qemu backend's guests,
    /// for `vm up --backend microvm --runner VM=DIR/VM`. Root (copies the root-only kernel).
    Runners {
        /// A new or empty directory (or one this command filled before).
        dir: PathBuf,
    },
    /// The tail of the VMs' logs in the runtime dir (`<vm>.log`, `<vm>-virtiofsd.log`).
    Logs {
        /// Only this VM.
        #[arg(value_parser = ["agent", "mcp", "target"])]
        vm: Option<String>,
        /// Lines per log.
        #[arg(long, default_value_t = 20)]
        lines: usize,
    },
}

/// Parses `--runner VM=PATH`.
fn parse_runner(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((vm, path)) if !vm.is_empty() && !path.is_empty() => {
            Ok((vm.to_owned(), PathBuf::from(path)))
        }
        _ => Err(format!("expected VM=PATH, got {s:?}")),
    }
}

/// Parses `--sshd-unit PORT=UNIT`.
fn parse_port_unit(s: &str) -> Result<(u16, String), String> {
    match s.split_once('=') {
        Some((port, unit)) if !unit.is_empty() => port
            .parse()
            .map(|p| (p, unit.to_owned()))
            .map_err(|e| format!("PORT in {s:?}: {e}")),
        _ => Err(format!("expected PORT=UNIT, got {s:?}")),
    }
}

/// Options of `sshlab vm` (and `run`).
#[derive(Debug, Clone, clap::Args)]
pub struct VmOpts {
    /// VM backend: `netns` (namespaces, no hypervisor), `qemu` (real guests booted by virtme-ng
    /// from the host's root filesystem, KVM or TCG) or `microvm` (the microvm.nix runners of
    /// `SSHLAB_RUNNER_<VM>`; the Nix apps set SSHLAB_VM_BACKEND=microvm).
    #[arg(
        long,
        global = true,
        env = "SSHLAB_VM_BACKEND",
        value_enum,
        default_value = "netns"
    )]
    pub backend: vm::Backend,
    /// microvm: VM's runner directory, overriding `SSHLAB_RUNNER_<VM>` (repeatable).
    #[arg(long = "runner", global = true, value_name = "VM=PATH", value_parser = parse_runner)]
    pub runners: Vec<(String, PathBuf)>,
    /// Results directory (default: `[results] host` of vms/topology.toml, the directory the
    /// microvm runners share into the Agent VM; netns only: any other directory).
    #[arg(long, global = true, value_name = "DIR")]
    pub results: Option<PathBuf>,
    /// Directory holding mcp-ssh-server and sshlab-agent (default: next to sshlab, then $PATH).
    #[arg(long, global = true, env = "SSHLAB_BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Seconds each VM may take to become ready (default: 30; qemu: 120 with KVM, 420 under
    /// TCG, where a guest boots the host's root over 9p on emulated CPUs).
    #[arg(long, global = true)]
    pub ready_timeout: Option<u64>,
    /// Seconds between restarts of the target's unstable sshd.
    #[arg(long, global = true, default_value_t = 30)]
    pub unstable_every: u64,
    /// Leave the target's netem ports unshaped (netns: `up` applies netem/profiles.toml to the
    /// target's link otherwise); `run latency_test` then covers the baseline port only.
    #[arg(long, global = true)]
    pub no_netem: bool,
    /// qemu: guests shaped as the NixOS test driver's nodes, so that nix/checks/vm-test.nix's
    /// own script runs against them (crates/sshlab/tests/nixos_vm_test.rs): the lab's NIC is
    /// `eth1` (the test's VLAN 1), and each guest serves the driver's root shell on a virtio
    /// port, at `<runtime>/qemu/<vm>/shell.sock` (root's alone).
    #[arg(long, global = true, hide = true)]
    pub test_driver: bool,
}

impl VmOpts {
    /// The backend's configuration for a lab run inside `outer`, shaping with the lab's
    /// profiles unless `--no-netem`.
    pub fn config(&self, outer: Option<&str>, lab: &Lab) -> vm::VmConfig {
        let profiles = &lab.netem;
        // Absolute: runners and guests start in directories of their own.
        let results = self
            .results
            .as_ref()
            .map_or_else(|| lab.topology.results.host.clone(), |p| absolute(p));
        let mut c = vm::VmConfig::new(
            outer,
            results,
            self.bin_dir.as_ref().map(|p| absolute(p)),
            vm::Invoker::from_env(),
        );
        c.timeout = self.ready_timeout.map(std::time::Duration::from_secs);
        c.unstable_every = self.unstable_every;
        c.backend = self.backend;
        c.runners.clone_from(&self.runners);
        c.netem = (!self.no_netem).then(|| profiles.clone());
        c.test_driver = self.test_driver;
        c
    }
}

/// `sshlab netem ...`
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum NetemAction {
    /// Install the profiles (prio root, one netem child per port, u32 filters); idempotent.
    Apply,
    /// Remove what `apply` installed.
    Clear,
    /// The device's qdiscs and filters, read back from the kernel, against the profiles.
    /// Exits 3 when not applied.
    Show {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Where netem goes.
#[derive(Debug, Clone, clap::Args)]
pub struct NetemTarget {
    /// The shaped interface (default: the lab's shaping: the target VM's TAP from
    /// vms/topology.toml, and the MCP VM's for the profiles shaped both ways). With --dev or
    /// --match, that one interface, every profile, one way.
    #[arg(long, global = true, value_name = "IFACE")]
    pub dev: Option<String>,
    /// Match the profile's port as destination (default; the host shaping traffic towards the
    /// target) or as source (a guest shaping its own replies).
    #[arg(long = "match", global = true, value_enum, value_name = "sport|dport")]
    pub port_match: Option<netem::PortMatch>,
}

/// `sshlab net ...`
#[derive(Debug, Subcommand)]
pub enum NetCommand {
    /// Create the bridge (with the host's lab address) and one TAP per VM; idempotent.
    Up {
        /// Give the TAPs to this uid so VMs can start unprivileged (default: $SUDO_UID).
        #[arg(long, value_name = "UID")]
        owner: Option<u32>,
        /// Build the links only; do not apply netem to the target's TAP.
        #[arg(long)]
        no_netem: bool,
    },
    /// Delete exactly what `net up` creates.
    Down,
    /// What exists, against the topology. Exits 3 when not ready.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Errors of the command layer: each wraps the layer below.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration files are missing or invalid.
    #[error("Invalid lab configuration")]
    Config(#[from] sshlab_core::Error),
    /// Entering the namespace failed.
    #[error(transparent)]
    Netns(#[from] netns::Error),
    /// Building the runtime failed.
    #[error("Cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// `sshlab net` failed.
    #[error(transparent)]
    Net(#[from] net::Error),
    /// `sshlab netem` failed.
    #[error(transparent)]
    Netem(#[from] netem::Error),
    /// `sshlab vm` or `run` failed.
    #[error(transparent)]
    Vm(#[from] anyhow::Error),
    /// Writing JSON failed.
    #[error("Cannot render JSON")]
    Json(#[from] serde_json::Error),
    /// The dashboard cannot be forwarded there.
    #[error(transparent)]
    Dashboard(#[from] dashboard::Error),
}

impl Error {
    /// The process exit code: 2 for invalid lab files, the `vm` layer's own codes for its
    /// classified errors ([`vm::Error`]: 2 bad input, 3 not ready, 4 missing tool, 5 conflict,
    /// 130 interrupted), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Dashboard(dashboard::Error::Addr(_)) => 2,
            Self::Vm(e) => vm::Error::exit_code_of(e),
            _ => 1,
        }
    }
}

/// Exit code of `net status` when the lab's network is not (fully) there.
pub const EXIT_NOT_READY: u8 = 3;

/// Runs one command. Prints its output on stdout; errors are returned for `main` to print.
pub fn run(opts: Opts) -> Result<ExitCode, Error> {
    let lab = match &opts.lab {
        Some(dir) => Lab::load(dir)?,
        None => Lab::builtin()?,
    };
    match opts.command {
        Command::Net(cmd) => {
            let (owner, with_netem) = match &cmd {
                NetCommand::Up { owner, no_netem } => (owner.or_else(sudo_uid), !no_netem),
                _ => (None, false),
            };
            let plan = net::NetPlan::new(&lab.topology, owner)?;
            let netem_plans = netem::lab::LabPlans::new(&lab.topology, &lab.netem)?;
            enter(opts.netns.as_deref())?;
            let code = block_on(run_net(cmd, plan))??;
            if with_netem {
                print_changes("netem apply", &netem::lab::apply(&netem_plans)?);
            }
            // The results share, for the user the TAPs are for: `nix run .#ssh-loadtest-full`
            // then runs as that user, who cannot create it under /var/lib.
            if let Some(uid) = owner {
                let cred = vm::Invoker::from_env()
                    .sudo
                    .filter(|c| c.uid == uid)
                    .unwrap_or_else(|| vm::invoker::Credentials::of_uid(uid));
                for done in vm::invoker::prepare_results(&lab.topology.results.host, Some(&cred))? {
                    println!("net up: {done}");
                }
            }
            Ok(code)
        }
        Command::Netem { action, target } => {
            // The lab's shaping (both ways where a profile asks), unless one device is named.
            let plans = match (&target.dev, target.port_match) {
                (None, None) => Plans::Lab(netem::lab::LabPlans::new(&lab.topology, &lab.netem)?),
                (dev, port_match) => Plans::One(netem::NetemPlan::new(
                    &lab.topology,
                    &lab.netem,
                    dev.as_deref(),
                    port_match,
                )?),
            };
            enter(opts.netns.as_deref())?;
            run_netem(action, &plans)
        }
        Command::Run {
            scenario,
            duration,
            workers,
            rate,
            thresholds,
            port,
            slo,
            keep,
            timeout,
            faults,
            dashboard,
            dashboard_public,
            opts: vopts,
        } => {
            let mut cfg = vopts.config(opts.netns.as_deref(), &lab);
            cfg.lab_dir = opts.lab.as_deref().map(absolute);
            cfg.locate();
            let spec = runjob::RunSpec {
                scenario,
                duration,
                workers,
                rate,
                thresholds,
                port,
                slo,
                keep,
                timeout: std::time::Duration::from_secs(timeout),
                faults,
            };
            // Listening before entering the lab's namespace: the browser is in this one.
            let dashboard = dashboard
                .map(|a| dashboard::bind(&a, dashboard_public))
                .transpose()?;
            enter(opts.netns.as_deref())?;
            let code = runjob::run(&spec, &cfg, &lab.topology, opts.netns.as_deref(), dashboard)?;
            Ok(ExitCode::from(code))
        }
        Command::List => {
            for s in scenario::builtin_names() {
                println!("{s}");
            }
            println!("full (= {})", scenario::FULL.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        Command::Metrics => {
            enter(opts.netns.as_deref())?;
            print!("{}", runjob::metrics(&lab.topology)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Guest {
            vm,
            results,
            bin_dir,
            unstable_every,
            netem,
            virtiofs,
            ifname,
            shell,
            control,
        } => {
            let g = vm::guest::GuestOpts {
                vm,
                results,
                bin_dir,
                unstable_every,
                netem: netem.then(|| lab.netem.clone()),
                virtiofs,
                ifname,
                shell,
                control,
            };
            Ok(ExitCode::from(vm::guest::run(&g, &lab.topology)?))
        }
        Command::GuestControl {
            vm,
            systemctl,
            sshd_units,
            mcp_unit,
            down_dir,
        } => {
            vm::control::serve_units(vm::control::Units {
                vm,
                systemctl,
                sshd: sshd_units,
                mcp: mcp_unit,
                down_dir,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            dir,
            baseline,
            bounds,
        } => {
            let r = runjob::report(&dir, baseline.as_deref(), &bounds)?;
            print!("{}", r.text);
            if let Some(note) = &r.note {
                println!("{note}");
            }
            for p in &r.written {
                println!("report: wrote {}", p.display());
            }
            Ok(ExitCode::from(if r.regressed { 99 } else { 0 }))
        }
        Command::Vm {
            action,
            opts: vopts,
        } => {
            let mut cfg = vopts.config(opts.netns.as_deref(), &lab);
            cfg.lab_dir = opts.lab.as_deref().map(absolute);
            if let VmAction::Runners { dir } = &action {
                let built = vm::runners::build(dir, &cfg, &lab)?;
                println!(
                    "vm runners: accelerator {} ({}); for `sshlab vm up --backend microvm`:",
                    built.accel.as_str(),
                    built.accel_why
                );
                for (name, path) in &built.runners {
                    println!("{}={}", vm::microvm::runner_var(name), path.display());
                }
                return Ok(ExitCode::SUCCESS);
            }
            if !matches!(action, VmAction::Up) {
                cfg.locate();
            }
            enter(opts.netns.as_deref())?;
            run_vm(action, &cfg, &lab, opts.netns.as_deref())
        }
    }
}

fn run_vm(
    action: VmAction,
    cfg: &vm::VmConfig,
    lab: &Lab,
    outer: Option<&str>,
) -> Result<ExitCode, Error> {
    match action {
        VmAction::Up => {
            let state = vm::up(cfg, &lab.topology, outer)?;
            println!(
                "vm up: lab {} ready; state {}, results {}",
                state.lab,
                cfg.state_path().display(),
                state.results.display()
            );
        }
        VmAction::Down => print_changes("vm down", &vm::down(cfg)?),
        VmAction::Status { json } => {
            let Some(st) = vm::status(cfg, &lab.topology)? else {
                println!("lab {} is not up", cfg.lab);
                return Ok(ExitCode::from(EXIT_NOT_READY));
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&st)?);
            } else {
                for s in &st {
                    println!(
                        "{:<7} ns {:<24} network {:<4} running {:<4} ready {:<4} log {}",
                        s.vm,
                        s.namespace,
                        yes(s.network),
                        yes(s.running),
                        yes(s.ready),
                        s.log.as_deref().unwrap_or("-")
                    );
                }
                if let Some(a) = st.iter().find_map(|s| s.accel.as_ref()) {
                    let kernels: Vec<String> = st
                        .iter()
                        .map(|s| format!("{} {}", s.vm, s.kernel.as_deref().unwrap_or("?")))
                        .collect();
                    println!(
                        "guests  accelerator {}; kernels: {}",
                        a.as_str(),
                        kernels.join(", ")
                    );
                }
                if let Some(n) = st.iter().find_map(|s| s.netem.as_ref()) {
                    println!("netem   {}", n.describe());
                }
            }
            if !st.iter().all(|s| s.network && s.running && s.ready) {
                return Ok(ExitCode::from(EXIT_NOT_READY));
            }
        }
        // Handled in `run`: it needs no namespace.
        VmAction::Runners { .. } => {}
        VmAction::Logs { vm: name, lines } => {
            for (path, tail) in vm::logs(cfg, &lab.topology, name.as_deref(), lines)? {
                println!("==> {} <==\n{tail}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// What `sshlab netem` acts on: the lab's shaping, or the one device `--dev`/`--match` name.
enum Plans {
    Lab(netem::lab::LabPlans),
    One(netem::NetemPlan),
}

fn run_netem(action: NetemAction, plans: &Plans) -> Result<ExitCode, Error> {
    match (action, plans) {
        (NetemAction::Apply, Plans::Lab(p)) => print_changes("netem apply", &netem::lab::apply(p)?),
        (NetemAction::Apply, Plans::One(p)) => print_changes("netem apply", &netem::apply(p)?),
        (NetemAction::Clear, Plans::Lab(p)) => print_changes("netem clear", &netem::lab::clear(p)?),
        (NetemAction::Clear, Plans::One(p)) => print_changes("netem clear", &netem::clear(p)?),
        (NetemAction::Show { json }, plans) => {
            let state = match plans {
                Plans::Lab(p) => netem::lab::show(p)?,
                Plans::One(p) => netem::show(p)?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&state)?);
            } else {
                println!("{state}");
            }
            if !state.ready {
                return Ok(ExitCode::from(EXIT_NOT_READY));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_net(cmd: NetCommand, plan: net::NetPlan) -> Result<ExitCode, Error> {
    let handle = net::connect()?;
    match cmd {
        NetCommand::Up { .. } => {
            let changes = net::up(&handle, &plan).await?;
            print_changes("net up", &changes);
            Ok(ExitCode::SUCCESS)
        }
        NetCommand::Down => {
            let changes = net::down(&handle, &plan).await?;
            print_changes("net down", &changes);
            Ok(ExitCode::SUCCESS)
        }
        NetCommand::Status { json } => {
            let status = net::status(&handle, &plan).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                println!("{status}");
            }
            Ok(if status.ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_NOT_READY)
            })
        }
    }
}

fn print_changes(what: &str, changes: &[String]) {
    if changes.is_empty() {
        println!("{what}: nothing to change");
    }
    for c in changes {
        println!("{what}: {c}");
    }
}

/// `SUDO_UID`, the invoking user under sudo.
/// `p` made absolute against the current directory (unchanged when that fails).
fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn sudo_uid() -> Option<u32> {
    std::env::var("SUDO_UID").ok()?.parse().ok()
}

fn enter(netns: Option<&str>) -> Result<(), Error> {
    if let Some(name) = netns {
        netns::enter(name)?;
    }
    Ok(())
}

/// A single-threaded runtime on the calling thread, so every socket it opens lives in the
/// namespace [`netns::enter`] moved this thread to.
fn block_on<F: Future>(fut: F) -> Result<F::Output, Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    Ok(rt.block_on(fut))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses() {
        let o =
            Opts::try_parse_from(["sshlab", "net", "up", "--netns", "x", "--owner", "7"]).unwrap();
        assert_eq!(o.netns.as_deref(), Some("x"));
        assert!(matches!(
            o.command,
            Command::Net(NetCommand::Up {
                owner: Some(7),
                no_netem: false
            })
        ));
        assert!(Opts::try_parse_from(["sshlab", "net", "sideways"]).is_err());
        // A regression bound that does not parse is refused with the arguments.
        for (bound, parses) in [("p99<1ms", false), ("p99=+10%", true)] {
            let args = [
                "sshlab",
                "report",
                "d",
                "--baseline",
                "b",
                "--max-regression",
                bound,
            ];
            assert_eq!(Opts::try_parse_from(args).is_ok(), parses, "{bound}");
        }
        let o = Opts::try_parse_from([
            "sshlab", "netem", "show", "--dev", "eth0", "--match", "sport",
        ])
        .unwrap();
        match o.command {
            Command::Netem { action, target } => {
                assert!(matches!(action, NetemAction::Show { json: false }));
                assert_eq!(target.dev.as_deref(), Some("eth0"));
                assert_eq!(target.port_match, Some(netem::PortMatch::Sport));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn run_cli_takes_rate_and_no_netem() {
        let o = Opts::try_parse_from([
            "sshlab",
            "run",
            "latency_test",
            "5",
            "2",
            "--rate",
            "2",
            "--no-netem",
        ])
        .unwrap();
        match o.command {
            Command::Run {
                rate,
                opts,
                workers,
                ..
            } => {
                assert_eq!((rate, workers), (Some(2.0), Some(2)));
                assert!(opts.no_netem);
                let c = opts.config(None, &Lab::builtin().unwrap());
                assert!(c.netem.is_none(), "--no-netem: nothing to apply");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn vm_cli_parses_backend_runners_and_logs() {
        let o = Opts::try_parse_from([
            "sshlab",
            "vm",
            "logs",
            "mcp",
            "--lines",
            "5",
            "--backend",
            "microvm",
            "--runner",
            "mcp=/nix/store/x-mcp",
            "--runner",
            "agent=/a",
        ])
        .unwrap();
        match o.command {
            Command::Vm {
                action: VmAction::Logs { vm, lines },
                opts,
            } => {
                assert_eq!(vm.as_deref(), Some("mcp"));
                assert_eq!(lines, 5);
                assert_eq!(opts.backend, vm::Backend::Microvm);
                let c = opts.config(None, &Lab::builtin().unwrap());
                assert!(c.netem.is_some());
                assert_eq!(c.backend, vm::Backend::Microvm);
                assert_eq!(
                    c.runners,
                    [
                        ("mcp".to_owned(), PathBuf::from("/nix/store/x-mcp")),
                        ("agent".to_owned(), PathBuf::from("/a"))
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(Opts::try_parse_from(["sshlab", "vm", "up", "--runner", "nopath"]).is_err());
        assert!(Opts::try_parse_from(["sshlab", "vm", "up", "--backend", "firecracker"]).is_err());
        let o = Opts::try_parse_from(["sshlab", "vm", "up", "--backend", "qemu"]).unwrap();
        assert!(matches!(o.command, Command::Vm { opts, .. } if opts.backend == vm::Backend::Qemu));
    }
}
