#!/usr/bin/env python3
"""A capsule whose own processes talk over TCP on 127.0.0.1 with data in flight, for migration tests.

loopq.py PORT MB    a server on 127.0.0.1:PORT that does not read yet, and a client process that
                    sends MB megabytes of the checked pattern to it without blocking until its
                    send queue is full ("QUEUED n"). The server also listens on 0.0.0.0:PORT+1;
                    when something connects there it reads everything the client sent, checks
                    every byte and prints "READ n OK" (or "ERROR ..."), then the client sends the
                    rest ("SENT n") and the server prints DONE.
"""
import os, select, socket, sys, time

PERIOD = 251
PATTERN = bytes((i * 7) % PERIOD for i in range(PERIOD)) * 270


def say(*a):
    # One write(2) per line: the server and the client share this O_APPEND log, and print() may split a
    # line into several writes (always so when PYTHONUNBUFFERED is set), which the other process can
    # interleave with its own line.
    os.write(1, (" ".join(map(str, a)) + "\n").encode())


def main(port, mb):
    total = mb << 20
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(1)
    go = socket.socket()
    go.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    go.bind(("0.0.0.0", port + 1))
    go.listen(1)
    if os.fork() == 0:
        client(port, total)
        return
    conn, _ = ls.accept()
    say("LISTENING", port + 1)
    trigger, _ = go.accept()
    trigger.close()
    pos = 0
    while pos < total:
        d = conn.recv(1 << 16)
        if not d:
            say("ERROR closed at", pos)
            sys.exit(1)
        o = pos % PERIOD
        if d != PATTERN[o:o + len(d)]:
            say("ERROR mismatch at", pos)
            sys.exit(1)
        pos += len(d)
    say("READ", pos, "OK")
    os.wait()
    say("DONE")


def client(port, total):
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    pos = 0
    while True:
        try:
            o = pos % PERIOD
            n = s.send(PATTERN[o:o + min(1 << 16, total - pos)])
            pos += n
            if pos >= total:
                break
        except BlockingIOError:
            break
    say("QUEUED", pos)
    s.setblocking(True)
    while pos < total:
        o = pos % PERIOD
        pos += s.send(PATTERN[o:o + min(1 << 16, total - pos)])
    s.close()
    say("SENT", pos)  # not "DONE": the tests wait for the server's DONE, after its READ


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
