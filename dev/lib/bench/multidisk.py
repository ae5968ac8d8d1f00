"""Case 7 (issue 14): how long the real guest stays frozen for one snapshot
of 1, 2, 4 and 8 of its raw data disks (vdb..), two ways, at two settings
of the monitor's `paxos_propose_interval`:

- rbdsnapd: `timings.freeze_window_ms` of one `snapshot.create` naming the
  disks (quiesce required, flatten none); it takes the temporary snapshots
  of all disks at once inside the window;
- in-process Python, as Nova and Proxmox do it: domain and images opened
  first, then fsFreeze → `create_snap` on each image one after another →
  fsThaw, from before the freeze to after the thaw.

Every RBD snapshot needs a snapshot id from the monitor, a paxos commit.
The bed's mon proposes every 0.01 s (its ceph.conf, for a fast bring-up);
Ceph's default is 1 s, where one snapshot waits up to a second for its
commit and snapshots asked for at the same time share one. The setting is
changed at runtime (`ceph tell mon.* config set`), read back, and always
set back to the bed's value.

Before measuring, the guest writes once to each data disk, so that QEMU's
librbd holds every disk's exclusive lock as in production: a snapshot by
another client then goes through the lock owner.

Runs are interleaved: each run goes through every disk count, each way
first in turn. The peer's snapshots and rbdsnapd's images are removed
after every run, and the guest is checked to be thawed.
"""
import base64
import concurrent.futures
import json
import sys
import subprocess
import time

import libvirt
import libvirt_qemu
import rbd

from .freeze import rotate
from .stats import CaseResult, Samples, num, ratio, summary, table, times

COUNTS = (1, 2, 4, 8)
SMOKE_COUNTS = (1, 2)
# seconds; Ceph's default first: it is the headline. Smoke runs only it, as
# it is the setting that exercises the switch and the way back.
INTERVALS = (1.0, 0.01)
SMOKE_INTERVALS = (1.0,)
BED_INTERVAL = 0.01  # what dev/lib/testbed/cluster.py writes in ceph.conf
GOAL = 1.15  # rbdsnapd's window at 4 disks ÷ at 1 disk, on every setting
GOAL_COUNT = 4

WAYS = ("rbdsnapd", "python")
LABELS = {
    "rbdsnapd": "rbdsnapd (concurrent snapshots)",
    "python": "Python, one snapshot after another",
}
# what each way's window is made of (see run_rbdsnapd)
STEPS = {"rbdsnapd": ("freeze", "snap", "paused", "thaw", "rest"),
         "python": ("freeze", "snap", "thaw")}

now = time.perf_counter


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def interval_label(secs):
    name = f"{secs:g} s"
    if secs == 1.0:
        return name + " (Ceph's default)"
    if secs == BED_INTERVAL:
        return name + " (the bed's ceph.conf)"
    return name


def data_disks(env):
    """[(target, pool, image)] from RBDSNAPD_TEST_GUEST_DATA_DISKS."""
    out = []
    for item in env["RBDSNAPD_TEST_GUEST_DATA_DISKS"].split(","):
        target, spec = item.split(":", 1)
        pool, image = spec.split("/", 1)
        out.append((target, pool, image))
    return out


# -- the guest and the monitor ------------------------------------------------

def guest_exec(dom, script, timeout=30.0):
    """Run `sh -c script` in the guest through the agent; its output. Raises
    if it fails or does not end in time."""
    cmd = {"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", script],
                                                  "capture-output": True}}
    pid = json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(cmd), 10, 0))["return"]["pid"]
    status = {"execute": "guest-exec-status", "arguments": {"pid": pid}}
    deadline = time.monotonic() + timeout
    while True:
        st = json.loads(libvirt_qemu.qemuAgentCommand(dom, json.dumps(status), 10, 0))["return"]
        if st.get("exited"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"guest-exec {script!r} did not end in {timeout} s")
        time.sleep(0.1)
    if st.get("exitcode") != 0:
        err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
        raise RuntimeError(f"guest-exec {script!r}: exit {st.get('exitcode')}: {err.strip()}")
    return st


def take_locks(b, dom, disks):
    """One direct write to each disk from the guest: QEMU's librbd takes the
    image's exclusive lock on its first write and keeps it. Checked from the
    cluster side, since a snapshot that does not go through the lock owner
    would be the cheaper, unrealistic case."""
    for target, _, _ in disks:
        guest_exec(dom, f"echo x | dd of=/dev/{target} bs=512 conv=sync,fsync oflag=direct")
    unlocked = [f"{pool}/{image}" for _, pool, image in disks
                if not lockers(b.ceph, pool, image)]
    if unlocked:
        raise RuntimeError(f"no exclusive-lock owner after the guest's write: {unlocked}")


def lockers(ceph, pool, image):
    with rbd.Image(ceph.io(pool), image, read_only=True) as img:
        held = img.list_lockers()
    return held["lockers"] if held else []


def ceph_admin(b, *args):
    """The ceph CLI as the bed's admin user (tell needs it); stdout."""
    argv = ["ceph", "--conf", b.env["RBDSNAPD_TEST_CEPH_CONF"],
            "--id", b.env["RBDSNAPD_TEST_CEPH_ADMIN_ID"], *args]
    out = subprocess.run(argv, env=b.env, stdin=subprocess.DEVNULL, capture_output=True,
                         timeout=60)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[3:])}: {out.stderr.decode().strip()[-300:]}")
    return out.stdout.decode()


SET_CMD = "tell mon.* config set paxos_propose_interval {}"


def set_interval(b, secs):
    """Set every mon's paxos_propose_interval at runtime and read it back
    from each: {mon: value read}. A runtime override, not `ceph config
    set`: the bed's ceph.conf value would win over the config database."""
    ceph_admin(b, *SET_CMD.format(secs).split())
    mons = [m["name"] for m in json.loads(ceph_admin(b, "mon", "dump", "--format", "json"))["mons"]]
    read = {}
    for mon in mons:
        out = json.loads(ceph_admin(b, "tell", f"mon.{mon}", "config", "get",
                                    "paxos_propose_interval"))
        read[mon] = float(out["paxos_propose_interval"])
        if abs(read[mon] - secs) > 1e-9:
            raise RuntimeError(f"mon.{mon} has paxos_propose_interval {read[mon]}, not {secs}")
    return read


def probe_snap_ms(b, rounds=3):
    """Median ms of one snapshot of a scratch image with no lock owner:
    little but the mon's commit, which shows the setting took."""
    io = b.ceph.io(b.images_pool)
    name = b.name("paxos-probe")
    rbd.RBD().create(io, name, 4 << 20)
    took = []
    try:
        with rbd.Image(io, name) as img:
            for k in range(rounds):
                t0 = now()
                img.create_snap(f"p{k}")
                took.append((now() - t0) * 1000)
    finally:
        b.ceph.remove_image(b.images_pool, name)
    return summary(took)["median"]


class MonInterval:
    """`with MonInterval(b, secs):` the mon proposes every `secs` inside,
    and every `BED_INTERVAL` again afterwards — also on failure or a signal."""

    def __init__(self, b, secs):
        self.b = b
        self.secs = secs

    def __enter__(self):
        try:
            self.read = set_interval(self.b, self.secs)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.secs != BED_INTERVAL:
            set_interval(self.b, BED_INTERVAL)


# -- one run ------------------------------------------------------------------

def run_rbdsnapd(b, c, guest, disks, name):
    """(window ms, {step: ms}, one_instant). With several raw disks that no
    frozen filesystem covers, the daemon also pauses the vCPUs around the
    snapshots (`snapshot.pause_vcpus = "auto"`, its default): `paused` is
    that span, `rest` what the window holds besides freeze, snap and thaw
    (the pause and resume calls and their journal records)."""
    r = c.call("snapshot.create", {"domain": guest, "image": name,
                                   "disks": [t for t, _, _ in disks],
                                   "quiesce": "required", "flatten": "none"})
    if r["consistency"] != "filesystem":
        raise RuntimeError(f"not frozen: {r['consistency_reason']}")
    if len(r["disks"]) != len(disks):
        raise RuntimeError(f"{len(r['disks'])} images for {len(disks)} disks")
    t = r["timings"]
    steps = {"freeze": t["freeze_ms"], "snap": t["snap_ms"], "thaw": t["thaw_ms"],
             "paused": t.get("pause_ms", 0)}
    steps["rest"] = t["freeze_window_ms"] - steps["freeze"] - steps["snap"] - steps["thaw"]
    return t["freeze_window_ms"], steps, r.get("one_instant")


def run_python(b, guest, disks, name):
    """(window ms, {step: ms}, None): it never pauses, so with several raw
    disks each is its own instant."""
    window, split = b.py_guest.freeze_window_disks(
        guest, [(pool, image) for _, pool, image in disks], name)
    return window * 1000, {k: x * 1000 for k, x in zip(("freeze", "snap", "thaw"), split)}, None


def ensure_running(b, guest):
    """A safety net like ensure_thawed: a domain the daemon left paused is
    resumed (a paused guest cannot answer the agent). True if it had to."""
    dom = b.py_guest.domain(guest)
    if dom.state()[0] != libvirt.VIR_DOMAIN_PAUSED:
        return False
    log("the guest is paused: resuming it")
    dom.resume()
    return True


def clean_up(b, way, disks, name):
    """Remove what one run made, all of it at once: at 1 s each removal
    waits for a mon commit of its own, in parallel they share them.
    rbdsnapd's images are <name> (one disk) or <name>-<target> in the images
    pool; the peer's snapshots are <name> on each source."""
    if way == "rbdsnapd":
        names = [name] if len(disks) == 1 else [f"{name}-{t}" for t, _, _ in disks]

        def remove(image):
            with b.guest_daemon.client(timeout=600) as c:  # one request per connection
                b.delete_image(c, b.images_pool, image)
    else:
        names = [(pool, image) for _, pool, image in disks]
        for pool, _ in names:
            b.ceph.io(pool)  # opened here, not raced for in the threads

        def remove(source):
            b.ceph.remove_snap(*source, name)
    with concurrent.futures.ThreadPoolExecutor(len(names)) as ex:
        for f in [ex.submit(remove, x) for x in names]:
            f.result()


class Cell:
    """One way at one disk count and one setting."""

    def __init__(self, way, count, secs):
        self.window = Samples(f"{LABELS[way]}, {count} disk(s), mon {secs:g} s")
        self.steps = {k: [] for k in STEPS[way]}
        self.one_instant = []


def measure(b, c, guest, disks, counts, secs, cells):
    """b.n runs at the current setting, every count and way in each."""
    for i in range(b.n):
        b.wait_libvirt()
        for k, count in enumerate(counts):
            for way in rotate(WAYS, i + k):
                cell = cells.setdefault((secs, count, way), Cell(way, count, secs))
                one(b, c, guest, disks[:count], way, cell, b.name(f"md{secs:g}-{count}-{i}-{way}"))
                time.sleep(b.pause)
        log(f"mon {secs:g} s: run {i + 1}/{b.n} done")


def one(b, c, guest, disks, way, cell, name):
    """One run of one way; a failure is recorded, the case goes on."""
    try:
        if way == "rbdsnapd":
            window, steps, one_instant = run_rbdsnapd(b, c, guest, disks, name)
        else:
            window, steps, one_instant = run_python(b, guest, disks, name)
        cell.window.add(window)
        for step, v in steps.items():
            cell.steps[step].append(v)
        cell.one_instant.append(one_instant)
    except Exception as exc:  # noqa: BLE001
        cell.window.fail(exc)
    finally:
        if ensure_running(b, guest):
            cell.window.fail(RuntimeError("the guest was left paused"))
        b.ensure_thawed()
        try:
            clean_up(b, way, disks, name)
        except Exception as exc:  # noqa: BLE001 - the leftover check reports it too
            cell.window.fail(RuntimeError(f"clean-up: {exc}"))


# -- the case -----------------------------------------------------------------

def run(b):
    guest = b.env["RBDSNAPD_TEST_GUEST"]
    counts = SMOKE_COUNTS if b.smoke else COUNTS
    intervals = SMOKE_INTERVALS if b.smoke else INTERVALS
    disks = data_disks(b.env)[:max(counts)]
    res = CaseResult("multidisk", "7. Multi-disk freeze window (issue 14)")
    cells = {}
    settings = {}  # secs → {"read": {mon: value}, "probe_ms": …}
    b.wait_libvirt()
    take_locks(b, b.py_guest.domain(guest), disks)
    with b.guest_daemon.client() as c:
        for secs in intervals:
            try:
                with MonInterval(b, secs) as mi:
                    settings[secs] = {"read": mi.read, "probe_ms": probe_snap_ms(b)}
                    log(f"mon paxos_propose_interval {secs:g} s (read back: {mi.read}); "
                        f"a snapshot of a scratch image: {settings[secs]['probe_ms']:.0f} ms")
                    measure(b, c, guest, disks, counts, secs, cells)
            except Exception as exc:  # noqa: BLE001 - the other setting may still run
                res.errors.append(f"mon {secs:g} s: {type(exc).__name__}: {exc}")
    # the lock must still be QEMU's at the end, or later runs measured the
    # cheaper path
    unlocked = [f"{p}/{i}" for _, p, i in disks if not lockers(b.ceph, p, i)]
    if unlocked:
        res.errors.append(f"exclusive lock no longer held at the end: {unlocked}")
    tables(res, cells, counts, intervals)
    res.notes.append(notes(b, guest, disks, settings, cells))
    res.data = {
        "counts": list(counts), "intervals_s": list(intervals),
        "settings": {f"{s:g}": v for s, v in settings.items()},
        "window_ms": {f"{s:g}": {w: {str(n): cells[(s, n, w)].window.values
                                     for n in counts if (s, n, w) in cells}
                                 for w in WAYS} for s in intervals},
        "one_instant": {f"{s:g}": {str(n): cells[(s, n, "rbdsnapd")].one_instant
                                   for n in counts if (s, n, "rbdsnapd") in cells}
                        for s in intervals},
        "steps_ms": {f"{s:g}": {w: {str(n): cells[(s, n, w)].steps
                                    for n in counts if (s, n, w) in cells}
                                for w in WAYS} for s in intervals},
    }
    res.collect_errors([cell.window for cell in cells.values()])
    return res


def median(values):
    return summary(values)["median"]


def window_ratio(data, secs, way, count, base=1):
    """Median window at `count` disks ÷ at `base` disks (None if missing)."""
    w = data["window_ms"].get(f"{secs:g}", {}).get(way, {})
    return ratio(median(w.get(str(count), [])), median(w.get(str(base), [])))


def tables(res, cells, counts, intervals):
    def cell(secs, count, way):
        return cells.get((secs, count, way)) or Cell(way, count, secs)

    for secs in intervals:
        res.tables.append(f"**Monitor `paxos_propose_interval` {interval_label(secs)}**")
        rows = []
        for count in counts:
            s = {w: cell(secs, count, w).window.summary() for w in WAYS}
            row = [count, s["rbdsnapd"]["n"]]
            for way in WAYS:
                base = cell(secs, 1, way).window.summary()["median"]
                row += [num(s[way]["median"]), num(s[way]["p90"]),
                        times(ratio(s[way]["median"], base))]
            rows.append(row + [times(ratio(s["rbdsnapd"]["median"], s["python"]["median"]))])
        res.table(["disks", "n", "rbdsnapd median ms", "p90 ms", "÷ 1 disk",
                   "Python sequential median ms", "p90 ms", "÷ 1 disk",
                   "rbdsnapd ÷ Python (median)"], rows)
    rows = []
    for secs in intervals:
        for count in counts:
            rows.append([f"{secs:g} s", count] +
                        [num(median(cell(secs, count, w).steps[k])) for w in WAYS
                         for k in STEPS[w]])
    res.tables.append(table(["median ms of each step: mon interval", "disks"] +
                            [f"{'Python' if w == 'python' else w} {k}" for w in WAYS
                             for k in STEPS[w]], rows))


def instants(cells):
    """Of rbdsnapd's runs with several disks: (paused, one_instant true, all)."""
    several = [c for (_, count, way), c in cells.items() if way == "rbdsnapd" and count > 1]
    paused = sum(1 for c in several for ms in c.steps["paused"] if ms > 0)
    one = sum(1 for c in several for f in c.one_instant if f)
    return paused, one, sum(len(c.one_instant) for c in several)


def notes(b, guest, disks, settings, cells):
    probe = "; ".join(f"{s:g} s: {num(v['probe_ms'])} ms" for s, v in settings.items())
    read = "; ".join(f"{s:g} s: " + ", ".join(f"mon.{m} {x:g}" for m, x in v["read"].items())
                     for s, v in settings.items())
    return (
        f"Guest `{guest}` (TCG), raw data disks "
        + ", ".join(f"`{t}` (`{p}/{i}`)" for t, p, i in disks)
        + ", 8 MiB each; the disk count N uses the first N. Window = freeze call → "
        "thaw answer (rbdsnapd's `timings.freeze_window_ms`; Python: before "
        "`fsFreeze` → after `fsThaw`); the snap column is all the disks' snapshots. "
        "Before measuring, the guest wrote once to each disk (`dd oflag=direct`), so "
        "that QEMU's librbd held every disk's exclusive lock (checked with "
        "`list_lockers` before and after): each snapshot went through the lock owner, "
        "as in production.\n\n"
        "The monitor setting was changed at runtime with "
        f"`ceph --id admin {SET_CMD.format('<secs>')}` (the bed's ceph.conf says "
        f"{BED_INTERVAL:g} s; set back to it after the case, also on failure) and read "
        f"back with `ceph tell mon.<id> config get paxos_propose_interval` ({read}). "
        "A snapshot of a scratch image with no lock owner (three back to back, "
        "median) took "
        f"{probe}. Runs interleaved: each run goes through every disk count, each "
        "way first in turn.\n\n"
        "These raw disks are under no frozen filesystem: with several of them the "
        "daemon pauses the vCPUs around the snapshots (its default "
        "`snapshot.pause_vcpus = \"auto\"`) so that the set is one instant. Of its "
        "{2} runs with 2 or more disks, {0} paused and {1} answered `one_instant: "
        "true`. The Python way does not pause: each of its disks is its own instant. "
        "rbdsnapd's `paused` is `timings.pause_ms` (pause → resume, the snapshots "
        "inside); `rest` is window − freeze − snap − thaw: the pause and resume "
        "calls and their journal records.".format(*instants(cells)))


def targets(result):
    """Rows (what, ratio, goal) for report.targets: rbdsnapd's window at 4
    disks ÷ at 1, per setting (at the largest count measured if 4 was not)."""
    d = result.data
    if not d:
        return []
    count = GOAL_COUNT if GOAL_COUNT in d["counts"] else max(d["counts"])
    return [(f"multi-disk freeze window, {count} disks ÷ 1 disk, mon "
             f"{s:g} s (issue 14)", window_ratio(d, s, "rbdsnapd", count), GOAL)
            for s in d["intervals_s"]]
