#!/bin/sh
# Live netem check, run INSIDE a VM whose kernel has sch_netem/sch_prio. Automated by
# crates/sshlab/tests/netem_vm.rs (sshlab-testkit's GuestVm), which parses the RESULT lines and
# asserts on them. By hand, as root, with linux-image-amd64, qemu-system-x86, busybox and
# virtme-ng installed and the sshlab binary copied where the guest sees it (virtme shares / read-
# only but gives the guest its own /tmp, /var/tmp and /opt), e.g.:
#   mkdir -p /var/lib/sshlab-vm/manual && cp target/debug/sshlab /var/lib/sshlab-vm/manual/
#   vng --run /boot/vmlinuz-*-amd64 --disable-kvm --memory 1G --cpus 2 --exec \
#     'SSHLAB_BIN=/var/lib/sshlab-vm/manual/sshlab SSHLAB_ROOT=/work/main sh /work/main/crates/sshlab/tests/vm/netem_guest.sh'
#
# Topology, all in namespaces of the guest:
#   lab     `sshlab net up` (bridge sshbr0 10.178.0.1/24, TAPs, netem on the target's TAP),
#           plus two veths enslaved to the bridge: tgt0 (to "target") and cli0 (to "client").
#           `netem apply --dev tgt0` shapes tgt0's egress = the traffic towards the target,
#           exactly as on the target's TAP.
#   target  10.178.0.20: TCP listeners on 2222, 2322, 2323; UDP echo on 2222 and 2323.
#   client  10.178.0.5 (the agent's address): the probes. Its traffic crosses the bridge like
#           another VM's, which is the point: the shaping applies to every VM's traffic.
#
# Then, with LAB_BIN_DIR set, the lab itself: `sshlab run latency_test` (netns backend) in an
# outer namespace `labrun`, whose `vm up` shapes the target's veth with real netem.
#
# Output: RESULT lines (parsed by the Rust test), TIMING lines, and `tc -s` for the log.
set -eu
B=${SSHLAB_BIN:?path of the sshlab binary}
LAB=${SSHLAB_ROOT:?repository root}
CONNECTS=${CONNECTS:-100}
UDP_PROBES=${UDP_PROBES:-4000}
MORE_PROBES=${MORE_PROBES:-2000}
PY=$(command -v python3 || echo /usr/bin/python3)
UDP="$LAB/crates/sshlab/tests/vm/udp.py"
# `netem show` of lab root $2 (and `netem show` flags after it) as one compact JSON RESULT
# line labelled $1.
show_result() {
  label=$1 root=$2; shift 2
  printf 'RESULT show %s ' "$label"
  $B --lab "$root" netem show --netns lab --json "$@" | "$PY" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))'
}
# Waits up to 60 s for the file $1 to be written (a server's "ready"); $2 names the server.
wait_ready() {
  i=0
  until [ -s "$1" ]; do
    i=$((i + 1)); [ $i -le 600 ] || { echo "$2 never came up" >&2; exit 1; }
    sleep 0.1
  done
}
modprobe sch_netem; modprobe sch_prio; modprobe tun
ip netns add lab; ip netns add target; ip netns add client
for ns in lab target client; do ip -n $ns link set lo up; done
s=$(date +%s%N); $B --lab "$LAB" net up --netns lab; e=$(date +%s%N)
echo "TIMING net-up-with-netem $(( (e-s)/1000000 )) ms"
$B --lab "$LAB" netem clear --netns lab
s=$(date +%s%N); $B --lab "$LAB" netem apply --netns lab; e=$(date +%s%N)
echo "TIMING netem-apply $(( (e-s)/1000000 )) ms"
ip -n lab link add tgt0 type veth peer name eth0 netns target
ip -n lab link set tgt0 master sshbr0 up
ip -n target addr add 10.178.0.20/24 dev eth0; ip -n target link set eth0 up
ip -n lab link add cli0 type veth peer name eth0 netns client
ip -n lab link set cli0 master sshbr0 up
ip -n client addr add 10.178.0.5/24 dev eth0; ip -n client link set eth0 up
$B --lab "$LAB" netem apply --netns lab --dev tgt0
# `netem show` for the target's TAP and for tgt0, one compact JSON line each.
for dev in default tgt0; do
  if [ "$dev" = default ]; then set --; else set -- --dev "$dev"; fi
  $B --lab "$LAB" netem show --netns lab "$@"
  show_result "$dev" "$LAB" "$@"
done
# Both ways: a lab root whose 2322 profile is shaped both ways (`both_ways = true`). `netem
# apply` without --dev shapes the target's TAP (every profile, destination ports) and the MCP
# VM's TAP for 2322 (source ports: the target's replies); applying the one-way profiles again
# removes the way back. The lab run below measures it.
both=$(mktemp -d); mkdir -p "$both/vms" "$both/netem"
cp "$LAB/vms/topology.toml" "$both/vms/"
awk '{ print } /^port = 2322$/ { print "both_ways = true" }' "$LAB/netem/profiles.toml" \
  > "$both/netem/profiles.toml"
$B --lab "$both" netem apply --netns lab
$B --lab "$both" netem show --netns lab
show_result both "$both"
$B --lab "$LAB" netem apply --netns lab
echo "RESULT back-cleared netem_left=$(tc -n lab qdisc show dev sshtap1 | grep -c -e netem -e prio)"

ready=$(mktemp)
ip netns exec target "$PY" -c '
import socket, sys, threading
def tcp_socket(p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("10.178.0.20", p)); s.listen(1024)
    return s
def udp_socket(p):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind(("10.178.0.20", p))
    return s
def accept(s):
    while True:
        c, _ = s.accept(); c.close()
def echo(s):
    while True:
        d, a = s.recvfrom(64); s.sendto(d, a)
# Bind everything first, then say so: the probes start only when every socket exists.
work = [(accept, tcp_socket(p)) for p in (2222, 2322, 2323)]
work += [(echo, udp_socket(p)) for p in (2222, 2323)]
for f, s in work:
    threading.Thread(target=f, args=(s,), daemon=True).start()
open(sys.argv[1], "w").write("ready\n")
threading.Event().wait()
' "$ready" &
server=$!
wait_ready "$ready" "the target's listeners"

# Loss probe design. The u32 filters match `protocol ip` and the 16 bits at offset 22 of the
# IPv4 packet (offset 20 + the low half of the word = the destination port of an option-less
# header) with no L4-protocol key, so a UDP datagram to port 2323 takes the same netem class
# as TCP to 2323 does. One datagram is one Bernoulli trial of netem's 5% loss, and nothing
# retransmits it (TCP would: a lost SYN only shows as a 1 s slower connect). The echo comes back
# through tgt0's ingress and cli0's egress, neither shaped, so a missing echo is a datagram that
# netem dropped. Probes are paced 1 ms apart: ~50 in flight behind the 50 ms delay, far below
# netem's 1000-packet limit, so no tail drop can add to the loss. The same probe on port 2222
# (unshaped) is the control: it must lose (almost) nothing.
ip netns exec client "$PY" - "$CONNECTS" <<'EOF'
import socket, statistics, sys, time
T = "10.178.0.20"
connects = int(sys.argv[1])

def connect_ms(port):
    s = socket.socket(); s.settimeout(5)
    a = time.perf_counter(); s.connect((T, port)); t = (time.perf_counter() - a) * 1000
    s.close()
    return t

for port in (2222, 2322):
    connect_ms(port)  # warm-up (ARP, first-packet costs)
    t = sorted(connect_ms(port) for _ in range(connects))
    print("RESULT connect %d n=%d median_ms=%.3f p10_ms=%.3f p90_ms=%.3f"
          % (port, len(t), statistics.median(t), t[len(t) // 10], t[len(t) * 9 // 10]), flush=True)
EOF
for port in 2222 2323; do
  ip netns exec client "$PY" "$UDP" probe udp-loss "$port" "$UDP_PROBES"
done
# The kernel's own counters (netem's "dropped" on the 2323 class), for the log.
tc -s -n lab qdisc show dev tgt0
kill "$server" 2>/dev/null || true

# netem beyond delay and loss, on tgt0, from a lab root whose profiles.toml asks for it:
#   2322 delay 50 ms, jitter 20 ms, distribution normal   (a spread beyond ±jitter)
#   2326 delay 50 ms, jitter 20 ms, uniform               (the control: none beyond; and
#                                                          jitter reorders the echoes)
#   2327 the same with rate_kbit 100000                   (a rate keeps them in order)
#   2323 delay 10 ms, duplicate 30%, alone                (30% more echoes than probes)
#   2324 delay 20 ms, reorder 25%                         (25% come back without the delay)
#   2325 delay 10 ms, corrupt 10%                         (a flipped bit: the checksum drops it)
# Each probe is a UDP datagram with its number, echoed by the target; every echo (duplicates
# too) is timed. A duplicating netem must be the only one in its tree (the kernel refuses it
# beside others), so 2323 gets a profiles file of its own, applied after the others are
# probed. (netem's seed: netem_seed_guest.sh.)
more=$(mktemp -d); mkdir -p "$more/vms" "$more/netem"
cp "$LAB/vms/topology.toml" "$more/vms/"
cat > "$more/netem/profiles.toml" <<'TOML'
[[profile]]
base = 2222
port = 2322
delay_ms = 50
jitter_ms = 20
loss_percent = 0.0
distribution = "normal"
[[profile]]
base = 2224
port = 2324
delay_ms = 20
jitter_ms = 0
loss_percent = 0.0
reorder_percent = 25.0
[[profile]]
base = 2225
port = 2325
delay_ms = 10
jitter_ms = 0
loss_percent = 0.0
corrupt_percent = 10.0
[[profile]]
base = 2226
port = 2326
delay_ms = 50
jitter_ms = 20
loss_percent = 0.0
[[profile]]
base = 2227
port = 2327
delay_ms = 50
jitter_ms = 20
loss_percent = 0.0
rate_kbit = 100000
TOML
$B --lab "$more" netem apply --netns lab --dev tgt0
$B --lab "$more" netem show --netns lab --dev tgt0
show_result more "$more" --dev tgt0
: > "$ready"
ip netns exec target "$PY" "$UDP" serve "$ready" 2322 2323 2324 2325 2326 2327 &
server=$!
wait_ready "$ready" "the echo servers"
for port in 2322 2326 2327; do
  ip netns exec client "$PY" "$UDP" probe more-spread "$port" "$MORE_PROBES"
done
ip netns exec client "$PY" "$UDP" probe more-reorder 2324 "$MORE_PROBES"
ip netns exec client "$PY" "$UDP" probe more-corrupt 2325 "$MORE_PROBES"
tc -s -n lab qdisc show dev tgt0
cat > "$more/netem/profiles.toml" <<'TOML'
[[profile]]
base = 2223
port = 2323
delay_ms = 10
jitter_ms = 0
loss_percent = 0.0
duplicate_percent = 30.0
TOML
$B --lab "$more" netem apply --netns lab --dev tgt0
show_result duplicate "$more" --dev tgt0
ip netns exec client "$PY" "$UDP" probe more-duplicate 2323 "$MORE_PROBES"
tc -s -n lab qdisc show dev tgt0
kill "$server" 2>/dev/null || true
rm -rf "$more"
$B --lab "$LAB" netem clear --netns lab --dev tgt0
$B --lab "$LAB" net down --netns lab
for ns in client target lab; do ip netns del $ns; done

# The whole lab with real netem: `sshlab run latency_test` on the netns backend inside an outer
# namespace of the guest (`vm up` shapes the target's veth, and the MCP VM's for 2322, shaped
# both ways in $both; the job covers 2222 and every netem port), when LAB_BIN_DIR holds mcp-ssh-server and sshlab-agent (release builds: debug ones are
# too slow under TCG for any delay to show). 2 commands/s, not the scenario's 10: the emulated
# guest cannot serve 10, and queueing would hide the delay. One RESULT line per port of
# the agent's summary.json; the run's own exit status is a RESULT too, so a failed run still
# prints what it measured.
if [ -n "${LAB_BIN_DIR:-}" ]; then
  ip netns add labrun; ip -n labrun link set lo up
  res=$(mktemp -d)
  s=$(date +%s%N)
  set +e
  SSHLAB_BIN_DIR="$LAB_BIN_DIR" $B --lab "$both" --netns labrun run latency_test \
    "${LAB_DURATION:-5}" "${LAB_WORKERS:-2}" --rate "${LAB_RATE:-2}" --results "$res" \
    --ready-timeout 300
  code=$?
  set -e
  e=$(date +%s%N)
  echo "TIMING lab-run-latency-test $(( (e-s)/1000000 )) ms"
  echo "RESULT lab-run exit=$code"
  "$PY" - "$res" <<'EOF'
import glob, json, sys
for path in sorted(glob.glob(sys.argv[1] + "/*/summary.json")):
    s = json.load(open(path))
    print("RESULT lab-summary complete=%d requests=%d failures=%d ports=%d"
          % (s["run"]["complete"], s["totals"]["requests"], s["totals"]["failures"], len(s["ports"])))
    for p in s["ports"]:
        print("RESULT lab-port %s p50_ms=%.3f p50_uncorrected_ms=%.3f min_uncorrected_ms=%.3f "
              "requests=%d failures=%d"
              % (p["name"], p["latency"]["p50"], p["latency_uncorrected"]["p50"],
                 p["latency_uncorrected"]["min"], p["totals"]["requests"], p["totals"]["failures"]))
EOF
  ip netns del labrun
  rm -rf "$res"
fi
rm -rf "$both"
echo GUEST-OK
