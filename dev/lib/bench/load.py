"""Cases 5 and 6 on the test-driver daemon:

5. 16 snapshot.create at once, one connection each, on rbdsnapd-test-01..16
   (released together by a barrier): total time (first send → last answer)
   and errors;
6. the daemon's resident memory (VmRSS) idle, at its peak during the 16
   concurrent jobs (sampled every 5 ms), and after; `daemon.status`
   round-trip latency at a paced 1000 requests/s on one connection
   (open loop: each request leaves at its slot, whatever the answers do).
"""
import json
import select
import threading
import time

from .rpc import Client
from .stats import CaseResult, Samples, num, summary

DOMAINS = [f"rbdsnapd-test-{n:02d}" for n in range(1, 17)]

now = time.perf_counter


class RssPeak:
    """Samples a daemon's VmRSS in a thread; `peak` in KiB."""

    def __init__(self, daemon, every=0.005):
        self.daemon = daemon
        self.every = every
        self.peak = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.daemon.rss_kib())
            time.sleep(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.daemon.rss_kib())


def concurrent_round(b, rep):
    """One round: returns (total seconds, per-request seconds, error strings)."""
    d = b.td_daemon
    names = [b.name(f"load{rep}-{k + 1:02d}") for k in range(len(DOMAINS))]
    barrier = threading.Barrier(len(DOMAINS))
    out = [None] * len(DOMAINS)

    def one(k):
        try:
            with d.client(timeout=600) as c:
                barrier.wait(timeout=60)
                t0 = now()
                try:
                    c.call("snapshot.create", {"domain": DOMAINS[k], "image": names[k]})
                    out[k] = (t0, now(), None)
                except Exception as exc:  # noqa: BLE001
                    out[k] = (t0, now(), f"{DOMAINS[k]}: {exc}")
        except Exception as exc:  # noqa: BLE001 - connect or barrier
            out[k] = (None, None, f"{DOMAINS[k]}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(DOMAINS))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        with d.client() as c:
            for name in names:
                b.delete_image(c, b.images_pool, name)
    starts = [o[0] for o in out if o and o[0] is not None]
    ends = [o[1] for o in out if o and o[1] is not None]
    total = max(ends) - min(starts) if starts else None
    each = [o[1] - o[0] for o in out if o and o[0] is not None]
    errors = [o[2] for o in out if o is None or o[2]]
    return total, each, errors


def paced_status(socket_path, rate, secs):
    """daemon.status at `rate`/s for `secs` on one connection: latencies (s)
    and the achieved send rate."""
    n = int(rate * secs)
    sent = [0.0] * (n + 1)
    got = [0.0] * (n + 1)
    received = 0
    with Client(socket_path, timeout=30) as c:
        sock = c.sock
        start = now()
        i = 1  # the next request to send
        while received < n:
            due = start + (i - 1) / rate if i <= n else None
            timeout = max(0.0, due - now()) if due is not None else 10.0
            readable, _, _ = select.select([sock], [], [], timeout)
            if readable:
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise ConnectionError("the daemon closed the connection")
                t = now()
                c.buf += chunk
                while (end := c.buf.find(b"\n")) >= 0:
                    msg = json.loads(bytes(c.buf[:end]))
                    del c.buf[:end + 1]
                    if "error" in msg:
                        raise RuntimeError(f"daemon.status: {msg['error']}")
                    got[msg["id"]] = t
                    received += 1
            elif due is None:
                raise TimeoutError(f"{n - received} daemon.status answers missing")
            if due is not None and now() >= due:
                sent[i] = now()
                sock.sendall(b'{"jsonrpc":"2.0","id":%d,"method":"daemon.status"}\n' % i)
                i += 1
    lat = [got[k] - sent[k] for k in range(1, n + 1)]
    return lat, (n - 1) / (sent[n] - sent[1]) if n > 1 else None


def run(b):
    res5 = CaseResult("concurrent", "5. 16 concurrent snapshot.create on 16 test-driver domains")
    res6 = CaseResult("daemon", "6. Daemon memory and daemon.status latency")
    total = Samples("16 concurrent (total)")
    each = []
    errors = []
    with RssPeak(b.td_daemon) as peak:
        for rep in range(b.n):
            try:
                t, e, errs = concurrent_round(b, rep)
                if t is not None:
                    total.add(t)
                each.extend(e)
                errors.extend(errs)
            except Exception as exc:  # noqa: BLE001
                total.fail(exc)
            time.sleep(b.pause)
    time.sleep(2)
    after = b.td_daemon.rss_kib()
    t, e = total.summary(), summary(each)
    res5.table(["what", "rounds", "requests", "errors", "median s", "p90 s", "max s"],
               [["all 16 answered (first send → last answer)", t["n"], len(each) + len(errors),
                 len(errors), num(t["median"], 3), num(t["p90"], 3), num(t["max"], 3)],
                ["each request (send → answer)", "", len(each), "", num(e["median"], 3),
                 num(e["p90"], 3), num(e["max"], 3)]])
    res5.notes.append("Each domain's disk is a 16 MiB RBD image; sync flatten, quiesce required "
                      "(the test driver's freeze).")
    res5.errors.extend(errors)
    res5.collect_errors([total])
    res5.data = {"total_s": total.values, "each_s": each, "errors": errors}

    lat = Samples("daemon.status at 1000/s")
    rate = None
    try:
        values, rate = paced_status(b.td_daemon.socket, 1000, b.latency_secs)
        lat.values = [v * 1000 for v in values]
    except Exception as exc:  # noqa: BLE001
        lat.fail(exc)
    mib = lambda kib: num(kib / 1024, 1)  # noqa: E731
    rows = [[f"resident memory idle, after start ({d.name}: {d.uri.split(':')[0]})",
             mib(b.rss_idle[d.name])] for d in b.daemons]
    rows += [["resident memory, peak during the 16 concurrent rounds", mib(peak.peak)],
             ["resident memory after them (2 s later)", mib(after)]]
    res6.table(["daemon memory (VmRSS)", "MiB"], rows)
    s = lat.summary()
    res6.table(["`daemon.status` round trip", "requests", "sent per s", "median ms", "p90 ms",
                "p99 ms", "max ms"],
               [[f"paced 1000/s for {b.latency_secs:g} s, one connection", s["n"],
                 num(rate), num(s["median"], 3), num(s["p90"], 3), num(s["p99"], 3),
                 num(s["max"], 3)]])
    res6.notes.append("Latency is measured by this Python client (send → answer line read), "
                      "so it includes the client's own scheduling on the same 2 cores.")
    res6.collect_errors([lat])
    res6.data = {"rss_idle_kib": b.rss_idle, "rss_peak_kib": peak.peak,
                 "rss_after_kib": after, "status_ms": lat.values, "status_rate": rate}
    return [res5, res6]
