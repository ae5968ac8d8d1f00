"""Case 1: how long the real guest stays frozen for one snapshot of its
disk, three ways, interleaved run by run (each way goes first in turn):

- rbdsnapd: `timings.freeze_window_ms` of `snapshot.create` (quiesce
  required, flatten none: the freeze window does not depend on the flatten),
  and the request's wall time;
- the command line: `virsh domfsfreeze` → `rbd snap create` → `virsh
  domfsthaw`, from before the freeze to after the thaw;
- in-process Python: domain and image opened first, then fsFreeze →
  create_snap → fsThaw.

The peers' snapshots and rbdsnapd's images are removed after every run.
"""
import time

from .stats import CaseResult, Samples, num, ratio, summary, times

WAYS = ("rbdsnapd", "cli", "python")
LABELS = {
    "rbdsnapd": "rbdsnapd (`timings.freeze_window_ms`)",
    "cli": "command line (virsh + rbd + virsh)",
    "python": "Python (python3-libvirt + python3-rbd, opened before)",
}

STEPS = ("freeze", "snap", "thaw")

now = time.perf_counter


def median(values):
    return summary(values)["median"]


def rotate(ways, i):
    k = i % len(ways)
    return ways[k:] + ways[:k]


def run(b):
    guest = b.env["RBDSNAPD_TEST_GUEST"]
    pool, image = b.env["RBDSNAPD_TEST_GUEST_IMAGE"].split("/", 1)
    res = CaseResult("freeze", "1. Freeze window of a snapshot of the real guest")
    fw = {w: Samples(LABELS[w]) for w in WAYS}
    steps = {w: {k: [] for k in STEPS} for w in WAYS}
    wall = Samples("rbdsnapd request → location (flatten none)")
    with b.guest_daemon.client() as c:
        for i in range(b.n):
            b.wait_libvirt()
            for way in rotate(WAYS, i):
                name = b.name(f"fw{i}-{way}")
                try:
                    if way == "rbdsnapd":
                        t0 = now()
                        r = c.call("snapshot.create", {"domain": guest, "image": name,
                                                       "quiesce": "required", "flatten": "none"})
                        wall.add((now() - t0) * 1000)
                        if r["consistency"] != "filesystem":
                            raise RuntimeError(f"not frozen: {r['consistency_reason']}")
                        t = r["timings"]
                        fw[way].add(t["freeze_window_ms"])
                        split = [t["freeze_ms"], t["snap_ms"], t["thaw_ms"]]
                    else:
                        peer = b.cli_guest if way == "cli" else b.py_guest
                        window, split = peer.freeze_window(guest, pool, image, name)
                        fw[way].add(window * 1000)
                        split = [x * 1000 for x in split]
                    for k, v in zip(STEPS, split):
                        steps[way][k].append(v)
                except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                    fw[way].fail(exc)
                finally:
                    b.ensure_thawed()
                    if way == "rbdsnapd":
                        b.delete_image(c, b.images_pool, name)
                    else:
                        b.ceph.remove_snap(pool, image, name)
                time.sleep(b.pause)
    s = {w: fw[w].summary() for w in WAYS}
    rows = []
    for w in WAYS:
        rows.append([LABELS[w], s[w]["n"], num(s[w]["median"]), num(s[w]["p90"]),
                     num(s[w]["max"]), times(ratio(s["rbdsnapd"]["median"], s[w]["median"]))])
    ws = wall.summary()
    rows.append([wall.label, ws["n"], num(ws["median"]), num(ws["p90"]), num(ws["max"]), ""])
    res.table(["way", "n", "median ms", "p90 ms", "max ms", "rbdsnapd ÷ way (median)"], rows)
    res.table(["way: median ms of each step"] + list(STEPS),
              [[LABELS[w]] + [num(median(steps[w][k])) for k in STEPS] for w in WAYS])
    res.notes.append(f"Guest `{guest}` (TCG), disk `{pool}/{image}`. Runs interleaved; "
                     "the command line's window includes starting three processes and "
                     "`rbd` connecting to the cluster, as a script pays it.")
    res.data = {"freeze_ms": {w: fw[w].values for w in WAYS}, "wall_ms": wall.values,
                "steps_ms": steps}
    res.collect_errors(list(fw.values()))
    return res
