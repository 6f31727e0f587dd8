#!/bin/sh
# Regenerates tc_requests.txt: the exact netlink requests iproute2's `tc` sends for the
# commands below, captured with strace. Run as root (needs strace and iproute2):
#   sh crates/sshlab/src/netem/testdata/capture.sh > crates/sshlab/src/netem/testdata/tc_requests.txt
# It works in a throwaway namespace holding one TAP, sshtap2, ifindex 2. The kernel may refuse
# the requests (no sch_prio/sch_netem here, or no parent yet): tc sends them all the same.
set -eu
ns="sshlab-capture-$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
ip -n "$ns" tuntap add sshtap2 mode tap vnet_hdr multi_queue
echo "# Captured from $(tc -V) by capture.sh; the device is sshtap2, ifindex 2."
while read -r cmd; do
    [ -n "$cmd" ] || continue
    echo "# tc $cmd"
    # shellcheck disable=SC2086 # word splitting of $cmd is intended
    ip netns exec "$ns" strace -f -e trace=sendmsg -e write=3 tc $cmd 2>&1 >/dev/null |
        awk '/^ \| [0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]  /{ for (i = 3; i <= 18 && $i ~ /^[0-9a-f][0-9a-f]$/; i++) printf "%s", $i }
             END { print "" }'
done <<'CMDS'
qdisc add dev sshtap2 root handle 1: prio bands 10
qdisc add dev sshtap2 parent 1:4 handle 10: netem delay 100ms 10ms
qdisc add dev sshtap2 parent 1:5 handle 11: netem delay 50ms 5ms loss 5%
qdisc add dev sshtap2 parent 1:6 handle 12: netem delay 200ms 20ms loss 10%
qdisc add dev sshtap2 parent 1:9 handle 15: netem delay 100ms 30ms 25% loss 2% 25%
qdisc add dev sshtap2 parent 1:a handle 16: netem delay 50ms 5ms rate 1000kbit
qdisc add dev sshtap2 parent 1:4 handle 10: netem delay 100ms
qdisc add dev sshtap2 parent 1:4 handle 10: netem delay 100ms 10ms reorder 25% duplicate 1% corrupt 0.1%
qdisc add dev sshtap2 parent 1:5 handle 11: netem delay 100ms 20ms distribution normal
qdisc add dev sshtap2 parent 1:6 handle 12: netem delay 200ms 20ms distribution pareto loss 10% rate 1000kbit
qdisc add dev sshtap2 parent 1:9 handle 15: netem delay 100ms 30ms 25% loss 2% 25% duplicate 5% reorder 10% corrupt 1%
filter add dev sshtap2 parent 1: protocol ip prio 1 u32 match ip dport 2322 0xffff flowid 1:4
filter add dev sshtap2 parent 1: protocol ip prio 7 u32 match ip sport 2328 0xffff flowid 1:a
qdisc del dev sshtap2 root handle 1:
CMDS
