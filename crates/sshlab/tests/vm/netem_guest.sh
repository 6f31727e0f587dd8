#!/bin/sh
# Live netem check, run INSIDE a VM whose kernel has sch_netem/sch_prio (not yet wired into a
# Rust harness). From the host, as root, with Debian's linux-image-amd64, qemu-system-x86,
# busybox and virtme-ng (pip) installed, and the sshlab binary copied somewhere the guest sees
# (virtme shares / read-only but gives the guest its own /tmp and /var/tmp), e.g.:
#   cp target/debug/sshlab /opt/sshlab-vm/sshlab
#   vng --run /boot/vmlinuz-*-amd64 --disable-kvm --memory 1G --cpus 2 \
#     --exec 'SSHLAB_BIN=/opt/sshlab-vm/sshlab SSHLAB_ROOT=/work/main sh /work/main/crates/sshlab/tests/vm/netem_guest.sh'
# Everything happens in namespaces of the guest; it prints TIMING and CONNECT lines.
set -eu
B=${SSHLAB_BIN:?path of the sshlab binary}
LAB=${SSHLAB_ROOT:?repository root}
modprobe sch_netem; modprobe sch_prio; modprobe tun
ip netns add lab; ip netns add target
ip -n lab link set lo up; ip -n target link set lo up
s=$(date +%s%N); $B --lab $LAB net up --netns lab; e=$(date +%s%N)
echo "TIMING net-up-with-netem $(( (e-s)/1000000 )) ms"
$B --lab $LAB netem show --netns lab
$B --lab $LAB netem clear --netns lab
s=$(date +%s%N); $B --lab $LAB netem apply --netns lab; e=$(date +%s%N)
echo "TIMING netem-apply $(( (e-s)/1000000 )) ms"
$B --lab $LAB netem apply --netns lab
# A stand-in target: a veth into namespace "target", enslaved to the bridge; shape its egress.
ip -n lab link add tgt0 type veth peer name eth0 netns target
ip -n lab link set tgt0 master sshbr0 up
ip -n target addr add 10.178.0.20/24 dev eth0; ip -n target link set eth0 up
$B --lab $LAB netem apply --netns lab --dev tgt0
$B --lab $LAB netem show --netns lab --dev tgt0
tc -n lab qdisc show dev tgt0; tc -n lab filter show dev tgt0 | grep -c match
ip netns exec target python3 -c '
import socket, threading
def serve(p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("10.178.0.20", p)); s.listen(512)
    while True:
        c, _ = s.accept(); c.close()
for p in (2222, 2322, 2328):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
threading.Event().wait()
' &
sleep 1
ip netns exec lab python3 -c '
import socket, time, statistics
for port in (2222, 2322, 2328):
    t = []
    for _ in range(100):
        s = socket.socket(); s.settimeout(5); a = time.perf_counter()
        s.connect(("10.178.0.20", port)); t.append((time.perf_counter() - a) * 1000); s.close()
    print("CONNECT port %d median %.1f ms" % (port, statistics.median(t)))
'
$B --lab $LAB netem clear --netns lab --dev tgt0
$B --lab $LAB net down --netns lab
echo GUEST-OK
