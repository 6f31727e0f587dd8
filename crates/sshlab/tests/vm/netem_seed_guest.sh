#!/bin/sh
# netem's seed, run INSIDE a VM whose kernel has sch_netem/sch_prio. Automated by
# crates/sshlab/tests/netem_vm.rs, which asserts on its RESULT lines, on the guests' kernel
# (the newest in /boot: bookworm-backports' 6.12, which scripts/install-deps vm installs) and
# on a kernel older than 6.6 (Debian 12's own 6.1).
#
# Two namespaces of the guest joined by a veth: `a` (10.178.0.5, the agent's address) sends
# numbered UDP datagrams to `b` (10.178.0.20:2323), and `sshlab netem apply --netns a --dev a0`
# shapes a0's egress with a profile for port 2323 that loses 50%.
# - A kernel that keeps the seed (TCA_NETEM_PRNG_SEED, Linux 6.6 and later): each round applies
#   afresh, sends the same datagrams, and prints which arrived as a digest: seed 7, seed 7
#   again, seed 8, and twice without a seed. The same seed must lose exactly the same
#   datagrams; another seed, or none, others.
# - An older kernel ignores the attribute: `apply` must refuse the seed with the reason and
#   leave no qdisc behind.
set -eu
B=${SSHLAB_BIN:?path of the sshlab binary}
LAB=${SSHLAB_ROOT:?repository root}
COUNT=${SEED_PROBES:-1000}
PY=$(command -v python3 || echo /usr/bin/python3)
modprobe sch_netem; modprobe sch_prio
release=$(uname -r)
keeps=0
if printf '6.6\n%s\n' "$release" | sort -V -C; then keeps=1; fi
echo "RESULT kernel release=$release keeps_seed=$keeps"
ip netns add a; ip netns add b
for ns in a b; do ip -n $ns link set lo up; done
ip -n a link add a0 type veth peer name b0 netns b
ip -n a addr add 10.178.0.5/24 dev a0; ip -n a link set a0 up
ip -n b addr add 10.178.0.20/24 dev b0; ip -n b link set b0 up
# Neighbours known in advance: no ARP request is in flight when the probes start.
ip -n a neigh add 10.178.0.20 lladdr "$(ip -n b -j link show b0 | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')" dev a0
lab=$(mktemp -d); mkdir -p "$lab/vms" "$lab/netem"
cp "$LAB/vms/topology.toml" "$lab/vms/"
# The lab's profiles file: 2323 loses 50%, with seed $1 when given.
profile() {
  cat > "$lab/netem/profiles.toml" <<TOML
[[profile]]
base = 2223
port = 2323
delay_ms = 0
jitter_ms = 0
loss_percent = 50.0
TOML
  if [ -n "$1" ]; then echo "seed = $1" >> "$lab/netem/profiles.toml"; fi
}
round() {
  label=$1
  profile "$2"
  $B --lab "$lab" netem clear --netns a --dev a0
  $B --lab "$lab" netem apply --netns a --dev a0
  printf 'RESULT show %s ' "$label"
  $B --lab "$lab" netem show --netns a --dev a0 --json | "$PY" -c 'import json,sys; print(json.dumps(json.load(sys.stdin)))'
  out=$(mktemp); ready=$(mktemp); sent=$(mktemp -u); : > "$ready"
  ip netns exec b "$PY" -c '
import hashlib, os, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind(("10.178.0.20", 2323))
open(sys.argv[2], "w").write("ready\n")
got = set()
s.settimeout(0.2)
# Until the sender is done (its file) and nothing came for half a second more.
quiet_since = None
while True:
    try:
        got.add(int(s.recv(64)))
        quiet_since = None
    except socket.timeout:
        if os.path.exists(sys.argv[3]):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 0.5:
                break
digest = hashlib.sha256(",".join(map(str, sorted(got))).encode()).hexdigest()[:16]
open(sys.argv[1], "w").write("received=%d digest=%s\n" % (len(got), digest))
'  "$out" "$ready" "$sent" &
  receiver=$!
  i=0; until [ -s "$ready" ]; do i=$((i + 1)); [ $i -le 600 ] || exit 1; sleep 0.1; done
  ip netns exec a "$PY" -c '
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[1])):
    s.sendto(str(i).encode(), ("10.178.0.20", 2323))
    time.sleep(0.0005)
' "$COUNT"
  : > "$sent"
  wait "$receiver"
  echo "RESULT round $label sent=$COUNT $(cat "$out")"
  rm -f "$out" "$ready" "$sent"
}
if [ "$keeps" = 1 ]; then
  round seed7 7
  round seed7-again 7
  round seed8 8
  round unseeded ""
  round unseeded-again ""
  tc -s -n a qdisc show dev a0
else
  round unseeded ""
  profile 7
  $B --lab "$lab" netem clear --netns a --dev a0
  set +e
  err=$($B --lab "$lab" netem apply --netns a --dev a0 2>&1)
  code=$?
  set -e
  echo "$err"
  echo "RESULT refused exit=$code kept_no_seed=$(echo "$err" | grep -c 'kept no seed for port 2323') netem_left=$(tc -n a qdisc show dev a0 | grep -c -e netem -e prio)"
fi
$B --lab "$lab" netem clear --netns a --dev a0
rm -rf "$lab"
for ns in a b; do ip netns del $ns; done
