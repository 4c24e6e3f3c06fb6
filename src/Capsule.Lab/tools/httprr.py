#!/usr/bin/env python3
"""HTTP request/response over one persistent (keep-alive) connection, for migration tests.

httprr.py HOST PORT SECS   GET /rr/N, check the answer is 200 with the body "reply N\\n", pause 2 ms,
                           repeat with N+1 for SECS seconds or until SIGUSR1; print DONE with the count,
                           the longest gap between replies and the seconds it ran; print ERROR and exit 1
                           on any failure: a wrong status or body, a reset, the connection closed or
                           opened anew

Progress lines go to stdout (the capsule's log): "PROGRESS replies=N gap=S" every 500 replies.
"""
import http.client, signal, sys, time


def say(*a):
    print(*a, flush=True)


def fail(*a):
    say("ERROR", *a)
    sys.exit(1)


def rr(host, port, secs):
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.connect()
    except OSError as e:
        fail("connecting to %s:%d: %s" % (host, port, e))
    # http.client would silently open a new connection if the old one were closed: the point is that
    # this one survives, so a closed connection must fail instead.
    conn.auto_open = 0
    sock = conn.sock
    end = [time.time() + secs]
    # The bench ends the run once the migration is over and enough replies came after it.
    signal.signal(signal.SIGUSR1, lambda *_: end.__setitem__(0, min(end[0], time.time())))
    replies = 0
    last = start = time.time()
    gap = 0.0
    while time.time() < end[0]:
        try:
            conn.request("GET", "/rr/%d" % replies)
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            fail("after %d replies: %s: %s" % (replies, type(e).__name__, e))
        if resp.status != 200 or body != b"reply %d\n" % replies:
            fail("after %d replies: status %d, body %r" % (replies, resp.status, body[:80]))
        if conn.sock is not sock or resp.will_close:
            fail("after %d replies: the server closed the connection" % replies)
        replies += 1
        now = time.time()
        gap = max(gap, now - last)
        last = now
        if replies % 500 == 0:
            say("PROGRESS replies=%d gap=%.3f" % (replies, gap))
        time.sleep(0.002)
    say("DONE replies=%d gap=%.3f secs=%.3f" % (replies, gap, time.time() - start))


if __name__ == "__main__":
    rr(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
