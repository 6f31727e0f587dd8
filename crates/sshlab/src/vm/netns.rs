//! `sshlab vm`, netns backend (no hypervisor): each VM of vms/topology.toml is a named network
//! namespace ([`super::net`]) with a veth whose host end carries the TAP's name on the bridge,
//! and its processes ([`super::process`]): the target's sshd instances ([`super::target`]),
//! the mcp VM's `mcp-ssh-server --profile loadtest`, the agent VM's `sshlab-agent serve`
//! ([`super::roles`]). Everything is made in the namespace sshlab runs in.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sshlab_core::Topology;

use super::{
    Endpoints, Proc, State, VmConfig, VmStatus, healthy, net, ports_open, process, roles, shaping,
    target, wait_ready,
};

/// How long a VM may take to become ready unless `--ready-timeout` says otherwise.
const DEFAULT_READY: Duration = Duration::from_secs(30);

/// `up` for the netns backend: fills `state` as it goes (so the caller can undo a failure).
pub fn build(cfg: &VmConfig, topology: &Topology, state: &mut State) -> anyhow::Result<()> {
    // Check the binaries before touching anything.
    let bins = roles::Bins::find(cfg.bin_dir.as_deref())?;
    // The agent runs as this process (root), on the host's filesystem; the results are for
    // anyone to read, whatever the umask.
    super::dirs::create_dir_all(&cfg.results, 0o755)
        .with_context(|| format!("cannot create {}", cfg.results.display()))?;
    let ep = Endpoints::new(topology)?;
    let plan = crate::net::NetPlan {
        bridge: topology.bridge.name.clone(),
        address: topology.bridge.address,
        taps: Vec::new(),
    };
    let gateway = topology.bridge.address.addr();
    let prefix = topology.bridge.address.prefix();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let h = crate::net::connect()?;
        let changes = crate::net::up(&h, &plan).await?;
        state.bridge_created = changes.iter().any(|c| c.starts_with("created bridge"));
        state.save(cfg)?;
        for vm in &topology.vms {
            let ns = format!("{}{}", cfg.ns_prefix, vm.name);
            if net::netns_exists(&ns) {
                bail!("network namespace {ns} already exists (not made by this `vm up`); remove it with `ip netns del {ns}`");
            }
            net::netns_add(&ns)?;
            state.namespaces.push((vm.name.clone(), ns.clone()));
            state.save(cfg)?;
            net::add_veth(&h, &vm.tap, &plan.bridge, &ns, vm.ip, prefix, gateway)
                .await
                .with_context(|| format!("VM {}: network", vm.name))?;
            state.veths.push(vm.tap.clone());
            state.save(cfg)?;
            println!("vm up: {} namespace {ns}, {} <-> eth0 {}/{prefix}", vm.name, vm.tap, vm.ip);
        }
        anyhow::Ok(())
    })?;
    drop(rt);

    let ns_of = |vm: &str| -> anyhow::Result<std::fs::File> {
        let ns = state
            .namespaces
            .iter()
            .find(|(v, _)| v == vm)
            .map(|(_, n)| n.clone())
            .with_context(|| format!("no namespace for VM {vm}"))?;
        net::open_netns(&ns)
    };

    // Target.
    let files = target::prepare(&cfg.runtime.join("target"), topology)?;
    let log = cfg.runtime.join("target.log");
    let mut p = process::spawn_in(
        "target",
        "sshd",
        target::command(&files, cfg.unstable_every)?,
        &ns_of("target")?,
        &log,
    )?;
    // unshare ignores SIGTERM while it waits: `down` signals the namespace's init instead.
    let spawned = Instant::now();
    while p.term_pid.is_none() && spawned.elapsed() < Duration::from_secs(2) {
        p.term_pid = process::first_child(p.pid);
        std::thread::sleep(Duration::from_millis(10));
    }
    state.procs.push(p.clone());
    state.save(cfg)?;
    let mut ports = Vec::new();
    for (_, base, netem) in &files.ports {
        ports.push(*base);
        ports.push(*netem);
    }
    wait_ready(
        "target",
        std::slice::from_ref(&p),
        &log,
        cfg.ready_timeout(DEFAULT_READY),
        || ports_open(ep.target, &ports, Duration::from_millis(300)),
    )?;
    println!(
        "vm up: target ready ({} sshd ports on {})",
        ports.len(),
        ep.target
    );
    // Shaped only now: the readiness probes above use short connect timeouts that the 1 s
    // profile would fail. A kernel without the modules leaves the lab up, unshaped, on record.
    state.netem = shaping::apply(topology, cfg.netem.as_ref())?;
    state.save(cfg)?;
    println!("vm up: netem {}", state.netem.describe());

    // MCP.
    let log = cfg.runtime.join("mcp.log");
    let cmd = roles::mcp_command(&bins, topology)?;
    let p = process::spawn_in("mcp", "mcp-ssh-server", cmd, &ns_of("mcp")?, &log)?;
    state.procs.push(p.clone());
    state.save(cfg)?;
    wait_ready(
        "mcp",
        std::slice::from_ref(&p),
        &log,
        cfg.ready_timeout(DEFAULT_READY),
        || healthy(ep.mcp),
    )?;
    println!("vm up: mcp ready (http://{}/health)", ep.mcp);

    // Agent.
    let log = cfg.runtime.join("agent.log");
    let cmd = roles::agent_command(&bins, topology, &cfg.results)?;
    let p = process::spawn_in("agent", "sshlab-agent", cmd, &ns_of("agent")?, &log)?;
    state.procs.push(p.clone());
    state.save(cfg)?;
    wait_ready(
        "agent",
        std::slice::from_ref(&p),
        &log,
        cfg.ready_timeout(DEFAULT_READY),
        || healthy(ep.agent),
    )?;
    println!("vm up: agent ready (http://{}/health)", ep.agent);
    Ok(())
}

/// Stops the processes (agent first), deletes the veths, namespaces and (if created) bridge,
/// then the runtime files except the results. Returns one line per step.
pub fn teardown(cfg: &VmConfig, state: &State) -> Vec<String> {
    let mut out = Vec::new();
    for p in state.procs.iter().rev() {
        out.push(p.stop(Duration::from_secs(5)));
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            out.push(format!("cannot start a runtime: {e}"));
            return out;
        }
    };
    rt.block_on(async {
        let h = match crate::net::connect() {
            Ok(h) => h,
            Err(e) => {
                out.push(format!("cannot open netlink: {e}"));
                return;
            }
        };
        for v in &state.veths {
            match net::del_veth(&h, v).await {
                Ok(true) => out.push(format!("deleted veth {v}")),
                Ok(false) => {}
                Err(e) => out.push(format!("{e:#}")),
            }
        }
        for (_, ns) in &state.namespaces {
            match net::netns_del(ns) {
                Ok(()) => out.push(format!("deleted namespace {ns}")),
                Err(e) => out.push(format!("{e:#}")),
            }
        }
        if state.bridge_created {
            let plan = crate::net::NetPlan {
                bridge: state.bridge.clone(),
                address: sshlab_core::Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0)
                    .expect("0.0.0.0/0 is valid"),
                taps: Vec::new(),
            };
            match crate::net::down(&h, &plan).await {
                Ok(c) => out.extend(c),
                Err(e) => out.push(format!("{e:#}")),
            }
        }
    });
    for f in ["target", "target.log", "mcp.log", "agent.log", "state.json"] {
        let p = cfg.runtime.join(f);
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        if let Err(e) = r
            && e.kind() != std::io::ErrorKind::NotFound
        {
            out.push(format!("cannot remove {}: {e}", p.display()));
        }
    }
    // The runtime dir goes too when empty (results elsewhere, or none).
    let _ = std::fs::remove_dir(&cfg.runtime);
    out
}

/// `status` for the netns backend: per VM, its namespace's eth0, processes, readiness.
pub fn status(state: &State, topology: &Topology) -> anyhow::Result<Vec<VmStatus>> {
    let ep = Endpoints::new(topology)?;
    let mut out = Vec::new();
    for vm in &topology.vms {
        let ns = state
            .namespaces
            .iter()
            .find(|(v, _)| *v == vm.name)
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        let network = !ns.is_empty()
            && net::inner_status(&ns)
                .is_ok_and(|(up, addrs)| up && addrs.iter().any(|(a, _)| *a == vm.ip));
        let procs: Vec<&Proc> = state.procs.iter().filter(|p| p.vm == vm.name).collect();
        let running = !procs.is_empty() && procs.iter().all(|p| p.alive());
        let ready = match vm.name.as_str() {
            "agent" => healthy(ep.agent),
            "mcp" => healthy(ep.mcp),
            _ => {
                let ports: Vec<u16> = vm.services.iter().map(|s| s.port).collect();
                target::listening(vm.ip, topology, &ports, Duration::from_millis(500))
            }
        };
        out.push(VmStatus {
            vm: vm.name.clone(),
            namespace: ns,
            network,
            running,
            ready,
            log: procs.first().map(|p| p.log.clone()),
            netem: None,
            accel: None,
            kernel: None,
        });
    }
    Ok(out)
}
