#!/usr/bin/env python3
"""A server that closes a connection with megabytes still unsent, and a slow reader that checks them.

serve PORT MB TRIGGER   accept one connection, write MB megabytes of a known pattern into it (print
                        SENT once the last byte is in the socket's buffer), then close it as soon as
                        the file TRIGGER exists (print CLOSED): the kernel then finishes sending on
                        its own, with no process holding the socket (an orphan)
fetch HOST PORT KBPS    read at KBPS kilobytes a second with a small receive buffer (so the unsent
                        bytes wait at the server, not here), check every byte against the pattern,
                        print PROGRESS lines and, at the end of the stream, DONE bytes=n; ERROR and
                        exit 1 on a reset or a wrong byte
"""
import os, socket, sys, time

PATTERN = bytes(i % 251 for i in range(251 * 1024))


def say(*a):
    print(*a, flush=True)


def chunk(offset, n):
    """n pattern bytes from stream offset `offset`."""
    out = bytearray()
    while len(out) < n:
        start = (offset + len(out)) % 251
        out += PATTERN[start:start + min(n - len(out), len(PATTERN) - start)]
    return bytes(out)


def serve(port, mb, trigger):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(1)
    say("LISTENING", port)
    c, _ = ls.accept()
    total, sent = mb << 20, 0
    while sent < total:
        n = min(1 << 16, total - sent)
        c.sendall(chunk(sent, n))
        sent += n
    say("SENT", sent)
    while not os.path.exists(trigger):
        time.sleep(0.01)
    c.close()
    say("CLOSED")
    while True:  # the capsule stays until it is removed
        time.sleep(3600)


def fetch(host, port, kbps):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 10)
    s.connect((host, port))
    got, began, last = 0, time.time(), 0.0
    try:
        while True:
            data = s.recv(16 << 10)
            if not data:
                break
            if data != chunk(got, len(data)):
                say("ERROR wrong bytes at", got)
                sys.exit(1)
            got += len(data)
            ahead = got / (kbps * 1024) - (time.time() - began)
            if ahead > 0:
                time.sleep(ahead)
            if time.time() - last >= 1:
                say("PROGRESS bytes=%d" % got)
                last = time.time()
    except OSError as e:
        say("ERROR", e, "after", got)
        sys.exit(1)
    say("DONE bytes=%d" % got)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "serve":
        serve(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif mode == "fetch":
        fetch(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        sys.exit(__doc__)
