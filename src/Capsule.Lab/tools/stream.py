#!/usr/bin/env python3
"""A long-lived TCP stream with checked data in both directions, for migration tests.

server PORT [MB]       accept connections; check every byte received against the pattern, echo it back;
                       MB: first fill that much memory (a heavier capsule, so a migration takes longer)
client HOST PORT SECS [GAP_MS]
                       send the pattern at a steady rate for SECS seconds (or until SIGUSR1), check every
                       echoed byte, then print DONE with the counts; print ERROR and exit 1 on any mismatch
                       or reset; GAP_MS: print "GAP end=T ms=M" for every gap between echoes over GAP_MS
rr HOST PORT SECS      request/response: send 64 bytes, wait for their echo, pause 2 ms, repeat for
                       SECS seconds; print DONE with the count and the longest gap between replies

The pattern byte at absolute stream offset p is (p * 7) % 251: a lost, duplicated or reordered byte
anywhere shows up as a mismatch at its offset. Progress lines go to stdout (the capsule's log).
"""
import select, signal, socket, sys, time

PERIOD = 251
PATTERN = bytes((i * 7) % PERIOD for i in range(PERIOD)) * 270  # >= 251 + the largest read (65536)


def expect(pos, n):
    o = pos % PERIOD
    return PATTERN[o:o + n]


def say(*a):
    print(*a, flush=True)


def server(port, ballast_mb=0):
    ballast = bytearray(ballast_mb << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = i & 0xFF  # touched, so the pages are real and CRIU has to move them
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(4)
    say("LISTENING", port)
    while True:
        c, addr = ls.accept()
        pos = 0
        while True:
            try:
                d = c.recv(65536)
            except ConnectionResetError:
                say("ERROR reset at", pos)
                break
            if not d:
                say("CLOSED after", pos)
                break
            if d != expect(pos, len(d)):
                e = expect(pos, len(d))
                i = next(i for i in range(len(d)) if d[i] != e[i])
                shift = next((k for k in range(PERIOD) if d[i:i + 64] == expect(pos + i + k, len(d[i:i + 64]))), None)
                say("ERROR mismatch at", pos + i, "(read of", len(d), "at", pos, ") stream shifted by", shift, "(mod 251)", "zeros" if not any(d[i:i+64]) else "")
                sys.exit(1)
            pos += len(d)
            c.sendall(d)
        c.close()


def client(host, port, secs, gap_ms=0.0):
    s = socket.create_connection((host, port), timeout=30)
    s.setblocking(False)
    chunk, interval = 4096, 0.004          # about 1 MB/s each way
    sent = echoed = 0
    end = [time.time() + secs]
    # A soak does not know in advance how long its migrations take: it ends the stream with SIGUSR1.
    signal.signal(signal.SIGUSR1, lambda *_: end.__setitem__(0, min(end[0], time.time())))
    last_say = 0
    next_send = time.time()
    biggest_gap, last_echo = 0.0, time.time()
    while True:
        now = time.time()
        sending = now < end[0]
        if sending and now >= next_send:
            try:
                n = s.send(expect(sent, chunk))
                sent += n
            except BlockingIOError:
                pass
            next_send += interval
        if not sending and echoed >= sent:
            say("DONE sent=%d echoed=%d gap=%.3f" % (sent, echoed, biggest_gap))
            return
        r, _, _ = select.select([s], [], [], 0.002)
        if r:
            try:
                d = s.recv(65536)
            except ConnectionResetError:
                say("ERROR reset after echoed=%d" % echoed)
                sys.exit(1)
            if not d:
                say("ERROR closed by peer after echoed=%d" % echoed)
                sys.exit(1)
            if d != expect(echoed, len(d)):
                say("ERROR mismatch at", echoed)
                sys.exit(1)
            echoed += len(d)
            got = time.time()
            gap = got - last_echo
            biggest_gap = max(biggest_gap, gap)
            if gap_ms and gap * 1000 > gap_ms:
                say("GAP end=%.3f ms=%.0f" % (got, gap * 1000))
            last_echo = got
        if now - last_say > 0.5:
            say("PROGRESS sent=%d echoed=%d" % (sent, echoed))
            last_say = now
        if now > end[0] + 60:
            say("ERROR echo stalled: sent=%d echoed=%d" % (sent, echoed))
            sys.exit(1)


def rr(host, port, secs):
    s = socket.create_connection((host, port), timeout=30)
    s.settimeout(60)
    pos = replies = 0
    last = start = time.time()
    gap = 0.0
    while time.time() - start < secs:
        s.sendall(expect(pos, 64))
        got = b""
        while len(got) < 64:
            d = s.recv(64 - len(got))
            if not d:
                say("ERROR closed by peer after %d replies" % replies)
                sys.exit(1)
            got += d
        if got != expect(pos, 64):
            say("ERROR mismatch at", pos)
            sys.exit(1)
        pos += 64
        replies += 1
        now = time.time()
        gap = max(gap, now - last)
        last = now
        if replies % 500 == 0:
            say("PROGRESS replies=%d gap=%.3f" % (replies, gap))
        time.sleep(0.002)
    say("DONE replies=%d gap=%.3f" % (replies, gap))


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    elif sys.argv[1] == "rr":
        rr(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]) if len(sys.argv) > 5 else 0.0)
