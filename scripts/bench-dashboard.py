#!/usr/bin/env python3
"""The live dashboard's cost, for scripts/bench-agent: the agent's CPU per request on the same
cheap MCP call (tools/call ssh_list_sessions, no SSH) without the dashboard, and with
`--dashboard` open in a headless Chromium and its /metrics scraped every second.

The agent's CPU is its own (user + system, from wait4 on its pid): the browser's and the
scraper's are not in it. Both runs start at a fixed time (`--start-at`), so the page is open and
its event stream connected before the first request; the agent's /metrics says how many pages
are connected, and a run with none is reported as failed, not measured. The two kinds of run
alternate BENCH_ROUNDS times (default 3); medians are printed, and the change. Asserts nothing.

    bench-dashboard.py URL AGENT_BIN SECONDS CONNECTIONS WORKDIR

The agent may be pinned (BENCH_AGENT_CPUS, e.g. `1`) away from the server, the browser and the
scraper (BENCH_OTHER_CPUS, e.g. `0`), as in the lab where the agent has a VM of its own.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

URL, AGENT, SECS, CONNS, WORK = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), pathlib.Path(sys.argv[5])
CHROMIUM = os.environ.get("SSHLAB_CHROMIUM", "/usr/bin/chromium")
ROUNDS = max(int(os.environ.get("BENCH_ROUNDS", "3")), 1)
LEAD_S = 4  # from launch to --start-at: the page loads and connects meanwhile


def taskset(cpus):
    return ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []


AGENT_PIN = taskset(os.environ.get("BENCH_AGENT_CPUS", ""))
OTHER_PIN = taskset(os.environ.get("BENCH_OTHER_CPUS", ""))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=2.0):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as r:
        return r.read().decode()


def gauge(text, name):
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def one(dashboard):
    scenario = WORK / "noop.toml"
    scenario.write_text(f'name = "noop"\nduration_s = {SECS}\n[[op]]\ntool = "ssh_list_sessions"\n')
    results = WORK / "dash-results"
    shutil.rmtree(results, ignore_errors=True)
    port = free_port()
    cmd = [*AGENT_PIN, AGENT, "run", "--mcp-url", URL, "--target-host", "127.0.0.1", "--scenario-file",
           str(scenario), "--workers", str(CONNS), "--protocol", "2026-07-28", "--bearer", "bench", "--quiet",
           "--results-dir", str(results), "--metrics-url", "http://127.0.0.1:9/metrics",
           "--start-at", f"{time.time() + LEAD_S:.3f}"]
    if dashboard:
        cmd += ["--dashboard", f"127.0.0.1:{port}"]
    agent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    browser, scraper, pages = None, None, []
    stop = threading.Event()
    if dashboard:
        base = f"http://127.0.0.1:{port}"
        for _ in range(50):
            try:
                get(f"{base}/metrics")
                break
            except OSError:
                time.sleep(0.05)
        profile = WORK / "chromium-profile"
        shutil.rmtree(profile, ignore_errors=True)
        browser = subprocess.Popen(
            [*OTHER_PIN, CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"{base}/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def scrape():
            # Prometheus' way: one GET a second, the pages counted from each.
            while not stop.wait(1.0):
                try:
                    pages.append(gauge(get(f"{base}/metrics"), "sshlab_agent_dashboard_streams") or 0)
                except OSError:
                    pass

        scraper = threading.Thread(target=scrape, daemon=True)
        scraper.start()
    _, status, usage = os.wait4(agent.pid, 0)
    agent.returncode = os.waitstatus_to_exitcode(status)
    stop.set()
    if scraper:
        scraper.join()
    if browser:
        os.killpg(browser.pid, signal.SIGKILL)  # its own session: chromium and its helpers
        browser.wait()
    err = agent.stderr.read().decode(errors="replace")
    if agent.returncode != 0:
        raise RuntimeError(f"agent exited {agent.returncode}: {err[-1000:]}")
    s = json.loads(next(results.glob("*/summary.json")).read_text())
    n = s["totals"]["requests"]
    # Connected through the run (the scrapes after its end find the page gone: it became the
    # report and closed its stream).
    if dashboard and sum(1 for p in pages if p >= 1) < 0.8 * SECS:
        raise RuntimeError(f"the page was not connected all along (pages seen per scrape: {pages})")
    return {"requests": n, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rps": n / max(s["duration_s"], 1e-9), "scrapes": len(pages)}


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


runs = {False: [], True: []}
for _ in range(ROUNDS):
    for dashboard in (False, True):
        try:
            runs[dashboard].append(one(dashboard))
        except Exception as e:
            print(f"{'with' if dashboard else 'without'} dashboard: failed: {e}")
us = {}
for dashboard, rs in runs.items():
    if not rs:
        continue
    per = [r["cpu_s"] * 1e6 / max(r["requests"], 1) for r in rs]
    us[dashboard] = median(per)
    label = "with the dashboard open, /metrics every 1 s" if dashboard else "without the dashboard"
    print(f"agent {label:<44} CPU {us[dashboard]:6.2f} us/req   {median([r['rps'] for r in rs]):>8.0f} req/s   "
          f"(rounds: {', '.join(f'{x:.2f}' for x in per)} us/req)")
if len(us) == 2:
    change = 100 * (us[True] - us[False]) / us[False]
    print(f"dashboard cost: {change:+.1f}% CPU per request (median of {ROUNDS} alternating rounds each)")
