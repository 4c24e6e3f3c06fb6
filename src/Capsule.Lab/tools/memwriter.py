#!/usr/bin/env python3
"""A capsule that dirties its memory fast while it serves a checked TCP stream, for migration tests.

memwriter.py PORT [MB] [MBPS]

Fills a buffer of MB megabytes (default 64) and then rewrites it, pass after pass, at about MBPS
megabytes a second (default 100): pass n writes (n + 1) % 251 into every byte. Before a chunk is
overwritten it is checked against the previous pass, so a page that CRIU lost or restored stale
shows up as "ERROR memory". Prints "WROTE passes=N mb=M" after each pass (the counter a test
watches rise), and serves stream.py's echo server on PORT meanwhile (same pattern, same checks).
"""
import os, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stream  # noqa: E402  (beside this file in tools/)

CHUNK = 1 << 20


def writer(mb, mbps):
    buf = bytearray(mb << 20)
    view = memoryview(buf)
    chunks = len(buf) // CHUNK
    passes = written = 0
    last_say = 0.0
    start = time.time()
    while True:
        want, fill = bytes([passes % 251]) * CHUNK, bytes([(passes + 1) % 251]) * CHUNK
        for i in range(chunks):
            lo, hi = i * CHUNK, (i + 1) * CHUNK
            # A bytearray slice is a copy compared with memcmp (a memoryview compares item by item: slow).
            if passes > 0 and buf[lo:hi] != want:
                bad = next(k for k in range(lo, hi) if buf[k] != want[0])
                stream.say("ERROR memory at %d: %d, expected %d (pass %d)" % (bad, buf[bad], want[0], passes))
                os._exit(1)
            view[lo:hi] = fill
            written += 1
            # Paced: MBPS megabytes a second on average; a stall (the freeze) is not made up for in a burst.
            ahead = written / mbps - (time.time() - start)
            if ahead > 0:
                time.sleep(ahead)
            elif ahead < -0.5:
                start = time.time() - written / mbps
        passes += 1
        if time.time() - last_say > 0.2:
            stream.say("WROTE passes=%d mb=%d" % (passes, written))
            last_say = time.time()


if __name__ == "__main__":
    port = int(sys.argv[1])
    mb = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    mbps = float(sys.argv[3]) if len(sys.argv) > 3 else 100.0
    threading.Thread(target=writer, args=(mb, mbps), daemon=True).start()
    stream.server(port)
