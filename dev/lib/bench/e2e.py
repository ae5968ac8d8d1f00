"""Cases 2-4, on a test-driver domain whose RBD disk is grown to each size
and fully written (4 MiB sequential writes, as tests/common BigDisk does),
then shrunk back:

2. end-to-end (request → location), sync flatten, three ways; the peers do
   Nova's whole sequence (freeze, snap, thaw, protect, clone, flatten,
   unprotect + remove, snap + protect on the clone); and the time outside
   the flatten;
3. flatten throughput of the same runs beside `rados bench` write;
4. time to location with `"flatten": "background"` and `"cluster"`, and
   until the image is really flattened.
"""
import time

from .ceph import rados_bench
from .freeze import rotate
from .rpc import RpcError
from .stats import CaseResult, Samples, num, ratio, summary, times

# `"flatten": "background"` and `"cluster"` exist in the daemon (c7e2bc4), so
# `dev/bench --smoke` (CI) fails when it answers invalid_params for them.
# Outside --smoke such an answer is reported as "not available"; set this to
# False to let --smoke pass against a daemon without them.
SMOKE_REQUIRES_FLATTEN_MODES = True

DOMAIN = "rbdsnapd-test-02"
SOURCE = ("vms", "testdrv-02-vda")
BED_SIZE = 16 << 20
WAYS = ("rbdsnapd", "cli", "python")
LABELS = {"rbdsnapd": "rbdsnapd", "cli": "command line (virsh + rbd)",
          "python": "Python (python3-libvirt + python3-rbd)"}
MODES = ("background", "cluster")
FLATTENED_TIMEOUT = 3600

now = time.perf_counter


def size_label(size):
    return f"{size >> 30} GiB" if size % (1 << 30) == 0 else f"{size >> 20} MiB"


class Sized:
    """The samples of one way at one size."""

    def __init__(self, way, size):
        label = f"{LABELS[way]}, {size_label(size)}"
        self.total = Samples(label)
        self.flatten = Samples(label)
        self.outside = Samples(label)
        self.timings = []  # rbdsnapd's own `timings`, and the wall time


def run(b):
    res2 = CaseResult("e2e", "2. End-to-end snapshot (request → location), sync flatten")
    res3 = CaseResult("flatten", "3. Flatten throughput beside `rados bench` write")
    res4 = CaseResult("modes", "4. Time to location with background and cluster flatten")
    runs = {}
    modes = {}
    bench = Samples("rados bench write")
    for _ in range(b.rados_bench_runs):
        try:
            bench.add(rados_bench(b.env, b.client_id, b.images_pool, b.rados_bench_secs))
        except Exception as exc:  # noqa: BLE001
            bench.fail(exc)
    for size in b.sizes:
        try:
            b.ceph.fill(*SOURCE, size)
            with b.td_daemon.client() as c:
                for i in range(b.n):
                    for way in rotate(WAYS, i):
                        one_e2e(b, c, runs.setdefault((way, size), Sized(way, size)), way, i)
                        time.sleep(b.pause)
                for mode in MODES:
                    modes[(mode, size)] = run_mode(b, c, mode, size)
        except Exception as exc:  # noqa: BLE001 - the next size may still work
            res2.errors.append(f"{size_label(size)}: {type(exc).__name__}: {exc}")
        finally:
            try:
                b.ceph.restore(*SOURCE, BED_SIZE)
            except Exception as exc:  # noqa: BLE001
                res2.errors.append(f"shrinking {'/'.join(SOURCE)} back: {exc}")
    tables_e2e(b, res2, runs)
    tables_flatten(b, res3, runs, bench)
    tables_modes(b, res4, runs, modes)
    return [res2, res3, res4]


def one_e2e(b, c, sized, way, i):
    name = b.name(f"e2e{i}-{way}")
    tmp = b.name(f"e2e{i}-{way}-tmp")
    try:
        if way == "rbdsnapd":
            t0 = now()
            r = c.call("snapshot.create", {"domain": DOMAIN, "image": name,
                                           "quiesce": "required", "flatten": "sync"})
            total = now() - t0
            flatten = r["timings"]["flatten_ms"] / 1000
            sized.timings.append(dict(r["timings"], wall_ms=total * 1000))
        else:
            peer = b.cli_td if way == "cli" else b.py_td
            total, flatten = peer.snapshot(DOMAIN, *SOURCE, tmp, b.images_pool, name)
        sized.total.add(total)
        sized.flatten.add(flatten)
        sized.outside.add(total - flatten)
    except Exception as exc:  # noqa: BLE001
        sized.total.fail(exc)
    finally:
        if way == "rbdsnapd":
            b.delete_image(c, b.images_pool, name)
        else:
            b.ceph.remove_image(b.images_pool, name)
            b.ceph.remove_snap(*SOURCE, tmp)


class ModeRuns:
    def __init__(self, mode, size):
        label = f"rbdsnapd {mode}, {size_label(size)}"
        self.location = Samples(label)
        self.flattened = Samples(label)
        self.unavailable = None


def run_mode(b, c, mode, size):
    m = ModeRuns(mode, size)
    for i in range(b.n):
        name = b.name(f"{mode}{i}")
        try:
            t0 = now()
            r = c.call("snapshot.create", {"domain": DOMAIN, "image": name,
                                           "quiesce": "required", "flatten": mode})
            m.location.add(now() - t0)
            wait_flattened(b, c, r["job_id"], name)
            m.flattened.add(now() - t0)
        except RpcError as exc:
            if exc.kind == "invalid_params" and i == 0:
                m.unavailable = str(exc)
                if b.smoke and SMOKE_REQUIRES_FLATTEN_MODES:
                    m.location.fail(exc)
                break
            m.location.fail(exc)
        except Exception as exc:  # noqa: BLE001
            m.location.fail(exc)
        finally:
            b.delete_image(c, b.images_pool, name)
        time.sleep(b.pause)
    return m


def wait_flattened(b, c, job_id, name):
    """Until the job is no longer running and the image has no parent."""
    deadline = time.monotonic() + FLATTENED_TIMEOUT
    while time.monotonic() < deadline:
        job = c.call("jobs.get", {"job_id": job_id})
        if job["state"] == "failed":
            raise RuntimeError(f"job {job_id} failed: {job.get('error')}")
        if job["state"] != "running" and not b.ceph.has_parent(b.images_pool, name):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{name} not flattened after {FLATTENED_TIMEOUT} s")


def tables_e2e(b, res, runs):
    rows = []
    for size in b.sizes:
        s = {w: runs[(w, size)] for w in WAYS if (w, size) in runs}
        if "rbdsnapd" not in s:
            continue
        base_t = s["rbdsnapd"].total.summary()["median"]
        base_o = s["rbdsnapd"].outside.summary()["median"]
        for w, sized in s.items():
            t, f, o = (x.summary() for x in (sized.total, sized.flatten, sized.outside))
            rows.append([LABELS[w], size_label(size), t["n"], num(t["median"], 2),
                         num(t["p90"], 2), num(t["max"], 2), num(f["median"], 2),
                         num(o["median"], 3), num(o["p90"], 3), num(o["max"], 3),
                         times(ratio(base_t, t["median"])), times(ratio(base_o, o["median"]))])
    res.table(["way", "size", "n", "total median s", "p90 s", "max s", "flatten median s",
               "outside flatten median s", "p90 s", "max s",
               "rbdsnapd ÷ way (total)", "rbdsnapd ÷ way (outside)"], rows)
    res.notes.append(
        f"Source: `{SOURCE[0]}/{SOURCE[1]}` of test-driver domain `{DOMAIN}` (its freeze is "
        "libvirt's test driver: no guest), fully written. rbdsnapd's flatten is its "
        "`timings.flatten_ms`, the command line's the `rbd flatten` process, Python's "
        "`Image.flatten()`. Outside flatten = total − flatten. Python keeps its libvirt and "
        "rados connections open across runs, as an agent would; the command line starts a "
        "process per step.")
    breakdown(b, res, runs)
    res.data = {f"{w}@{size}": {"total": r.total.values, "flatten": r.flatten.values,
                                "outside": r.outside.values, "timings": r.timings}
                for (w, size), r in runs.items()}
    for r in runs.values():
        res.collect_errors([r.total])


def breakdown(b, res, runs):
    """rbdsnapd's own `timings` (median ms per field), what they leave out
    of its `total_ms`, and the socket's share (wall − total_ms)."""
    order = ["preflight_ms", "freeze_ms", "snap_ms", "thaw_ms", "freeze_window_ms", "clone_ms",
             "flatten_ms", "finish_ms"]
    keys = []
    for size in b.sizes:
        for t in getattr(runs.get(("rbdsnapd", size)), "timings", []):
            keys += [k for k in t if k not in keys and k != "wall_ms"]
    keys.sort(key=lambda k: (order.index(k) if k in order else len(order), k == "total_ms", k))
    steps = [k for k in keys if k not in ("total_ms", "freeze_window_ms")]
    rows = []
    for size in b.sizes:
        ts = getattr(runs.get(("rbdsnapd", size)), "timings", [])
        if not ts:
            continue
        med = {k: summary([t[k] for t in ts if isinstance(t.get(k), (int, float))])["median"]
               for k in keys + ["wall_ms"]}
        rest = summary([t["total_ms"] - sum(t.get(k) or 0 for k in steps) for t in ts])["median"]
        sock = summary([t["wall_ms"] - t["total_ms"] for t in ts])["median"]
        rows.append([size_label(size)] + [num(med[k]) for k in keys] + [num(rest), num(sock)])
    if rows:
        res.table(["rbdsnapd `timings`, median ms"] + [f"`{k}`" for k in keys] +
                  ["`total_ms` − the steps", "wall − `total_ms`"], rows)


def mibs(size, secs):
    return [(size / (1 << 20)) / s for s in secs if s > 0]


def tables_flatten(b, res, runs, bench):
    bs = bench.summary()["median"]
    rows = []
    for size in b.sizes:
        cli = runs.get(("cli", size))
        cli_med = summary(mibs(size, cli.flatten.values))["median"] if cli else None
        for w in WAYS:
            if (w, size) not in runs:
                continue
            t = summary(mibs(size, runs[(w, size)].flatten.values))
            rows.append([LABELS[w], size_label(size), t["n"], num(t["median"]), num(t["min"]),
                         num(t["max"]), times(ratio(t["median"], cli_med)),
                         times(ratio(t["median"], bs))])
    r = bench.summary()
    rows.append([f"`rados bench {b.rados_bench_secs} write` (16 × 4 MiB in flight)", "",
                 r["n"], num(r["median"]), num(r["min"]), num(r["max"]), "", "1.00×"])
    res.table(["way", "size", "n", "median MiB/s", "min MiB/s", "max MiB/s",
               "÷ `rbd flatten` (median)", "÷ rados bench (median)"], rows)
    res.notes.append("Throughput = image size ÷ flatten time of the runs of case 2. A flatten "
                     "reads every object of the parent and writes it into the clone.")
    res.data = {"rados_bench_mibs": bench.values,
                "flatten_mibs": {f"{w}@{size}": mibs(size, r.flatten.values)
                                 for (w, size), r in runs.items()}}
    res.collect_errors([bench])


def tables_modes(b, res, runs, modes):
    rows = []
    for size in b.sizes:
        sync = runs.get(("rbdsnapd", size))
        sync_med = sync.total.summary()["median"] if sync else None
        if sync:
            t = sync.total.summary()
            rows.append(["sync (case 2)", size_label(size), t["n"], num(t["median"], 3),
                         num(t["p90"], 3), num(t["max"], 3), "1.00×", num(t["median"], 2)])
        for mode in MODES:
            m = modes.get((mode, size))
            if m is None:
                continue
            if m.unavailable:
                rows.append([mode, size_label(size), 0, "not available", "", "", "", ""])
                continue
            t, f = m.location.summary(), m.flattened.summary()
            rows.append([mode, size_label(size), t["n"], num(t["median"], 3), num(t["p90"], 3),
                         num(t["max"], 3), times(ratio(t["median"], sync_med)),
                         num(f["median"], 2)])
    res.table(["flatten", "size", "n", "to location median s", "p90 s", "max s",
               "÷ sync (median)", "until flattened median s"], rows)
    unavailable = {m.unavailable for m in modes.values() if m.unavailable}
    for u in sorted(unavailable):
        res.notes.append(f"Not available: the daemon answered `{u}`.")
    res.data = {f"{mode}@{size}": {"location": m.location.values,
                                   "flattened": m.flattened.values,
                                   "unavailable": m.unavailable}
                for (mode, size), m in modes.items()}
    res.collect_errors([m.location for m in modes.values()])
