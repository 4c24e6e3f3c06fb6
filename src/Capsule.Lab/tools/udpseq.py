#!/usr/bin/env python3
"""Numbered UDP datagrams at a steady rate, for migration soaks: every loss is counted, none guessed.

send HOST PORT RATE SECS  send RATE datagrams a second (512 bytes, the sequence number first) for SECS
                          seconds or until SIGUSR1, then "END n" a few times; print DONE sent=n
recv PORT [GAP_MS]        count the distinct sequence numbers received, duplicates and reorderings;
                          print PROGRESS every second, "GAP end=T ms=M" for every gap between datagrams
                          over GAP_MS, and DONE with sent/received/lost/duplicates/reordered and the
                          first missing numbers once END arrives (it keeps running, so the capsule
                          stays until it is removed)
"""
import signal, socket, struct, sys, time

SIZE = 512
ENDS = 5  # END goes several times: one lost END must not leave the receiver without the count


def say(*a):
    print(*a, flush=True)


def send(host, port, rate, secs):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    end = [time.time() + secs]
    # A soak does not know in advance how long its migrations take: it ends the stream with SIGUSR1.
    signal.signal(signal.SIGUSR1, lambda *_: end.__setitem__(0, min(end[0], time.time())))
    pad = bytes(SIZE - 8)
    seq = errors = 0
    next_send = last_say = time.time()
    while time.time() < end[0]:
        try:
            s.sendto(struct.pack("!Q", seq) + pad, (host, port))
            seq += 1
        except OSError:
            errors += 1  # the sender's own host refused it: counted, and the receiver sees it missing
        next_send += 1.0 / rate
        if time.time() - last_say > 1:
            say("PROGRESS sent=%d" % seq)
            last_say = time.time()
        time.sleep(max(0.0, next_send - time.time()))
    for _ in range(ENDS):
        s.sendto(b"END %d" % seq, (host, port))
        time.sleep(0.05)
    say("DONE sent=%d send_errors=%d" % (seq, errors))


def recv(port, gap_ms):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    s.settimeout(1.0)
    say("LISTENING", port)
    seen = bytearray()
    received = dups = reordered = highest = 0
    last = None
    last_say = time.time()
    done = False
    while True:
        try:
            d = s.recv(2048)
        except socket.timeout:
            d = None
        now = time.time()
        if d and d.startswith(b"END"):
            if not done:
                sent = int(d.split()[1])
                # Which ones are missing (the first few): the sender's rate turns a number into a time.
                missing = [i for i in range(sent) if i >= len(seen) or not seen[i]][:20]
                say("DONE sent=%d received=%d lost=%d dup=%d reordered=%d missing=%s"
                    % (sent, received, sent - received, dups, reordered, ",".join(map(str, missing)) or "-"))
                done = True
        elif d:
            seq = struct.unpack("!Q", d[:8])[0]
            if seq >= len(seen):
                seen.extend(bytes(max(seq + 1 - len(seen), 65536)))
            if seen[seq]:
                dups += 1
            else:
                seen[seq] = 1
                received += 1
            if seq < highest:
                reordered += 1
            highest = max(highest, seq)
            if last is not None and gap_ms and (now - last) * 1000 > gap_ms:
                say("GAP end=%.3f ms=%.0f" % (now, (now - last) * 1000))
            last = now
        if now - last_say > 1:
            say("PROGRESS received=%d highest=%d dup=%d" % (received, highest, dups))
            last_say = now


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]))
    else:
        recv(int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
