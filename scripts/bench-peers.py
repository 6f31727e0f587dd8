#!/usr/bin/env python3
"""The load-generator comparison of scripts/bench-agent: sshlab-agent, wrk, oha, k6 and Locust
against the same MCP call (tools/call ssh_list_sessions, 2026-07-28, no SSH involved) on the same
server, with the same number of connections, one after another in one run.

For each generator: requests/s, p50 and p99 as the generator itself reports them, and the CPU it
spent per request (user + system time of its process tree, from wait4, divided by its request
count). Then the agent's ratio to each. Prints figures; asserts nothing.

    bench-peers.py URL AGENT_BIN SECONDS CONNECTIONS WORKDIR

BENCH_ROUNDS (1) repeats the whole comparison, generators alternating, and prints medians;
BENCH_ONLY (comma-separated names, e.g. `sshlab-agent,wrk`) runs only those generators;
BENCH_AGENT_ARGS adds flags to the agent's run (e.g. `--threads 1`).
"""

import csv
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

URL, AGENT, SECS, CONNS, WORK = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), pathlib.Path(sys.argv[5])
TOOLS = pathlib.Path(os.environ.get("SSHLAB_TOOLS", "/opt/sshlab-tools")) / "bin"
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
BODY = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "ssh_list_sessions", "arguments": {}, "_meta": META}})
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "tools/call",
    "Mcp-Name": "ssh_list_sessions",
}


def run(cmd, **kw):
    """Run cmd to its end; return (stdout, stderr). Its CPU time lands in RUSAGE_CHILDREN."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    out, err = p.communicate()
    if p.returncode != 0:
        sys.stderr.write(f"{cmd[0]} exited {p.returncode}: {err[-2000:]}\n")
    return out, err


def cpu_children():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measured(fn):
    before = cpu_children()
    result = fn()
    result["cpu_s"] = cpu_children() - before
    return result


def agent():
    scenario = WORK / "noop.toml"
    scenario.write_text(f'name = "noop"\nduration_s = {SECS}\n[[op]]\ntool = "ssh_list_sessions"\n')
    results = WORK / "agent-results"
    shutil.rmtree(results, ignore_errors=True)
    run([AGENT, "run", "--mcp-url", URL, "--target-host", "127.0.0.1", "--scenario-file", str(scenario),
         "--workers", str(CONNS), "--protocol", "2026-07-28", "--bearer", "bench", "--quiet",
         "--results-dir", str(results), "--metrics-url", "http://127.0.0.1:9/metrics",
         *os.environ.get("BENCH_AGENT_ARGS", "").split()])
    s = json.loads(next(results.glob("*/summary.json")).read_text())
    n = s["totals"]["requests"]
    # Every request's latency, failures included, as the peers report theirs.
    lat = s.get("latency_all") or s["latency"]
    return {"requests": n, "rps": n / max(s["duration_s"], 1e-9), "p50": lat["p50"],
            "p99": lat["p99"], "errors": s["totals"]["failures"]}


def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk():
    lua = WORK / "post.lua"
    lua.write_text("wrk.method = 'POST'\nwrk.body = [[" + BODY + "]]\n"
                   + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in HEADERS.items()))
    out, _ = run(["wrk", "-t2", f"-c{CONNS}", f"-d{SECS}s", "--latency", "-s", str(lua), URL])
    pct = {m[0]: ms(m[1], m[2]) for m in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    n = int(re.search(r"(\d+) requests in", out).group(1))
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"requests": n, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": pct.get("50"), "p99": pct.get("99"), "errors": int(errs.group(1)) if errs else 0}


def oha():
    cmd = [str(TOOLS / "oha"), "--no-tui", "--output-format", "json", "-z", f"{SECS}s", "-c", str(CONNS),
           "-m", "POST", "-d", BODY, URL]
    for k, v in HEADERS.items():
        cmd[1:1] = ["-H", f"{k}: {v}"]
    out, _ = run(cmd)
    j = json.loads(out)
    codes = j.get("statusCodeDistribution", {})
    n = sum(codes.values())
    return {"requests": n, "rps": j["summary"]["requestsPerSec"],
            "p50": j["latencyPercentiles"]["p50"] * 1000, "p99": j["latencyPercentiles"]["p99"] * 1000,
            "errors": n - codes.get("200", 0)}


def k6():
    script = WORK / "k6.js"
    script.write_text(
        "import http from 'k6/http';\n"
        f"export const options = {{ vus: {CONNS}, duration: '{SECS}s', summaryTrendStats: ['p(50)', 'p(99)'] }};\n"
        f"const body = {json.dumps(BODY)};\n"
        f"const params = {{ headers: {json.dumps(HEADERS)} }};\n"
        f"export default function () {{ http.post({json.dumps(URL)}, body, params); }}\n")
    summary = WORK / "k6-summary.json"
    run([str(TOOLS / "k6"), "run", "--quiet", "--no-usage-report", "--summary-export", str(summary), str(script)])
    m = json.loads(summary.read_text())["metrics"]
    n = m["http_reqs"]["count"]
    return {"requests": n, "rps": m["http_reqs"]["rate"], "p50": m["http_req_duration"]["p(50)"],
            "p99": m["http_req_duration"]["p(99)"], "errors": round(m["http_req_failed"]["value"] * n)}


def locust():
    f = WORK / "locustfile.py"
    f.write_text(
        "from locust import constant\nfrom locust.contrib.fasthttp import FastHttpUser\nfrom locust import task\n"
        f"BODY = {BODY!r}\nHEADERS = {HEADERS!r}\n"
        "class Mcp(FastHttpUser):\n    wait_time = constant(0)\n"
        f"    @task\n    def call(self):\n        self.client.post({URL!r}, data=BODY, headers=HEADERS)\n")
    prefix = WORK / "locust"
    run([str(TOOLS / "locust"), "-f", str(f), "--headless", "-u", str(CONNS), "-r", str(CONNS),
         "-t", f"{SECS}s", "--host", URL, "--csv", str(prefix), "--only-summary", "--loglevel", "ERROR"])
    row = next(r for r in csv.DictReader(open(f"{prefix}_stats.csv")) if r["Name"] == "Aggregated")
    n = int(row["Request Count"])
    return {"requests": n, "rps": float(row["Requests/s"]), "p50": float(row["50%"]),
            "p99": float(row["99%"]), "errors": int(row["Failure Count"])}


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


# BENCH_ROUNDS rounds, the generators alternating within each, so drift of the machine (other
# tenants, frequency) lands on all of them alike; each figure printed is the median of its rounds.
rounds = max(int(os.environ.get("BENCH_ROUNDS", "1")), 1)
only = [n for n in os.environ.get("BENCH_ONLY", "").split(",") if n]
runs = {}
for _ in range(rounds):
    for name, fn in [("sshlab-agent", agent), ("wrk", wrk), ("oha", oha), ("k6 1.1.0", k6), ("locust 2.47", locust)]:
        if only and name.split()[0] not in only:
            continue
        try:
            runs.setdefault(name, []).append(measured(fn))
        except Exception as e:  # a peer that fails is reported, the rest still run
            print(f"{name:<14} failed: {e}")
results = {}
for name, rs in runs.items():
    r = {
        "rps": median([x["rps"] for x in rs]),
        "us": median([x["cpu_s"] * 1e6 / max(x["requests"], 1) for x in rs]),
        "p50": None if any(x["p50"] is None for x in rs) else median([x["p50"] for x in rs]),
        "p99": None if any(x["p99"] is None for x in rs) else median([x["p99"] for x in rs]),
        "errors": sum(x["errors"] for x in rs),
        "spread": f"{min(x['rps'] for x in rs):.0f}-{max(x['rps'] for x in rs):.0f}" if len(rs) > 1 else "",
    }
    results[name] = r
    p50 = "n/a" if r["p50"] is None else f"{r['p50']:.2f}"
    p99 = "n/a" if r["p99"] is None else f"{r['p99']:.2f}"
    spread = f"   (rounds {r['spread']})" if r["spread"] else ""
    print(f"{name:<14} {r['rps']:>9.0f} req/s   p50 {p50:>7} ms   p99 {p99:>7} ms   "
          f"CPU {r['us']:6.1f} us/req   errors {r['errors']}{spread}")
a = results.get("sshlab-agent")
if a:
    ratios = [f"{name} {a['rps'] / r['rps']:.2f}x" for name, r in results.items() if name != "sshlab-agent" and r["rps"]]
    print("agent requests/s vs: " + ", ".join(ratios))
