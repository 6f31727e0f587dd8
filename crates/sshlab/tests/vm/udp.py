"""UDP echo servers and numbered probes for netem_guest.sh (run inside the netem VM).

  udp.py serve READY_FILE PORT...   echo every datagram on 10.178.0.20:PORT; write READY_FILE
                                    once every socket is bound
  udp.py probe LABEL PORT COUNT     send COUNT numbered datagrams 1 ms apart, time every echo
                                    (duplicates too) for 2 s more, print one RESULT line

The RESULT line: `RESULT LABEL PORT sent= received= lost= echoes= median_ms= beyond25=
undelayed= out_of_order=`: received counts distinct numbers, echoes every datagram;
beyond25 is the share of first echoes more than 25 ms from their median, undelayed the share
under 10 ms, out_of_order the echoes whose number is below one already seen.
"""
import select
import socket
import statistics
import sys
import threading
import time

TARGET = "10.178.0.20"


def udp_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    return s


def serve(ready, ports):
    socks = []
    for p in ports:
        s = udp_socket()
        s.bind((TARGET, p))
        socks.append(s)

    def echo(s):
        while True:
            d, a = s.recvfrom(64)
            s.sendto(d, a)

    for s in socks:
        threading.Thread(target=echo, args=(s,), daemon=True).start()
    open(ready, "w").write("ready\n")
    threading.Event().wait()


def probe(label, port, count):
    s = udp_socket()
    s.connect((TARGET, port))
    s.setblocking(False)
    sent, got = {}, []

    def drain(timeout):
        while select.select([s], [], [], timeout)[0]:
            try:
                d = s.recv(64)
            except BlockingIOError:
                return
            n = int.from_bytes(d[:4], "big")
            if n in sent:
                got.append((n, (time.perf_counter() - sent[n]) * 1000))
            timeout = 0

    nxt = time.perf_counter()
    for i in range(count):
        sent[i] = time.perf_counter()
        s.send(i.to_bytes(4, "big"))
        nxt += 0.001
        drain(max(0.0, nxt - time.perf_counter()))
    end = time.perf_counter() + 2.0
    while time.perf_counter() < end:
        drain(0.1)
    s.close()
    firsts = {}
    for n, rtt in got:
        firsts.setdefault(n, rtt)
    rtts = sorted(firsts.values()) or [0.0]
    med = statistics.median(rtts)
    late, top = 0, -1
    for n, _ in got:
        late += n < top
        top = max(top, n)
    print(
        "RESULT %s %d sent=%d received=%d lost=%d echoes=%d median_ms=%.2f beyond25=%.4f "
        "undelayed=%.4f out_of_order=%d"
        % (label, port, count, len(firsts), count - len(firsts), len(got), med,
           sum(abs(r - med) > 25 for r in rtts) / len(rtts),
           sum(r < 10 for r in rtts) / len(rtts), late),
        flush=True,
    )


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], [int(p) for p in sys.argv[3:]])
    elif sys.argv[1] == "probe":
        probe(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit("usage: udp.py serve READY PORT... | probe LABEL PORT COUNT")
