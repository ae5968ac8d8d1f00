"""The run: the daemons and peers on the bed, the cases in order, a check
that nothing was left behind, then the tables, report, plot."""
import json
import os
import secrets
import sys
import time

import libvirt
import libvirt_qemu

from . import e2e, freeze, load, multidisk, report
from .ceph import Ceph, connect
from .cli import REPO
from .daemon import Daemon
from .peers import CliPeer, PyPeer
from .rpc import RpcError
from .stats import CaseResult, table


# key (--cases), label, function; in the order they run. Case 7 last: it
# changes the mon's paxos interval (and sets it back) while it runs.
CASES = (("freeze", "case 1: freeze window", freeze.run),
         ("e2e", "cases 2-4: end to end, flatten, background/cluster", e2e.run),
         ("load", "cases 5-6: concurrency, memory, latency", load.run),
         ("multidisk", "case 7: multi-disk freeze window", multidisk.run))


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class Bench:
    """What every case uses: options, the bed's env, the two daemons (one
    on qemu:///system for the guest, one on the test driver), the peers and
    a librados client for housekeeping."""

    def __init__(self, args, bed, argv):
        self.args = args
        self.argv = argv
        self.bed = os.path.abspath(bed)
        self.repo = REPO
        self.env = dict(os.environ)
        self.n = args.n
        self.sizes = args.sizes
        self.smoke = args.smoke
        self.pause = args.pause
        self.latency_secs = args.latency_secs
        self.rados_bench_secs = args.rados_bench_secs
        self.rados_bench_runs = 1 if args.smoke else 3
        self.images_pool = self.env["RBDSNAPD_TEST_POOL_IMAGES"]
        self.client_id = self.env["RBDSNAPD_TEST_CEPH_ID"]
        self.run_id = secrets.token_hex(3)
        self.ceph = None
        self.daemons = []
        self.rss_idle = {}
        self.peer_rados = None
        self.py_guest = self.py_td = None
        self.notes = []
        self.load = []

    def name(self, what):
        return f"bench-{self.run_id}-{what}"

    def bed_description(self):
        store = self.args.store
        if store == "bluestore" and self.env.get("RBDSNAPD_BENCH_OSD_GIB"):
            store += f" on a {self.env['RBDSNAPD_BENCH_OSD_GIB']} GiB sparse file"
        return (f"1 mon + 1 OSD ({store}, `osd_snap_trim_sleep_hdd` 0) + 1 mgr on "
                "127.0.0.1; libvirtd; the guest under QEMU TCG (1 vCPU), disk on RBD")

    # -- set-up and tear-down --------------------------------------------
    def start(self):
        e = self.env
        # housekeeping (images, config set) as admin; the daemon and the
        # peers as the least-privilege user, as on a compute node
        self.ceph = Ceph(e["RBDSNAPD_TEST_CEPH_CONF"], e["RBDSNAPD_TEST_CEPH_ADMIN_ID"], e)
        # Every run deletes images that had a snapshot: their objects stay
        # as snapshot clones until the OSD trims the removed snapshot. The
        # bed's bluestore file sits on a disk Ceph takes for rotational,
        # whose default trim sleep (5 s) lets ~50 GiB pile up over a full
        # run (ENOSPC); 0 is Ceph's default for SSDs.
        self.ceph.config_set("osd", "osd_snap_trim_sleep_hdd", 0)
        binary = os.path.join(REPO, "target", "release", "rbdsnapd")
        self.guest_daemon = Daemon(binary, self.bed, "rbdsnapd-guest",
                                   e["RBDSNAPD_TEST_LIBVIRT_URI"], e)
        self.td_daemon = Daemon(binary, self.bed, "rbdsnapd-testdrv",
                                e["RBDSNAPD_TEST_TESTDRV_URI"], e)
        for d in (self.guest_daemon, self.td_daemon):
            self.daemons.append(d)
            status = d.start()
            log(f"{d.name} up (version {status['version']}, pid {d.pid})")
        time.sleep(1)
        self.rss_idle = {d.name: d.rss_kib() for d in self.daemons}
        self.cli_guest = CliPeer(e["RBDSNAPD_TEST_LIBVIRT_URI"], self.client_id, e)
        self.cli_td = CliPeer(e["RBDSNAPD_TEST_TESTDRV_URI"], self.client_id, e)
        self.peer_rados = connect(e["RBDSNAPD_TEST_CEPH_CONF"], self.client_id)
        libvirt.registerErrorHandler(lambda *_: None, None)
        self.py_guest = PyPeer(e["RBDSNAPD_TEST_LIBVIRT_URI"], self.peer_rados)
        self.py_td = PyPeer(e["RBDSNAPD_TEST_TESTDRV_URI"], self.peer_rados)

    def stop(self):
        try:
            if self.py_guest is not None:
                self.ensure_thawed()
        except Exception as exc:  # noqa: BLE001 - still stop the daemons
            log(f"WARNING: could not check that the guest is thawed: {exc}")
        finally:
            for d in self.daemons:
                try:
                    d.stop()
                except Exception as exc:  # noqa: BLE001
                    log(f"stopping {d.name}: {exc}")
            for p in (self.py_guest, self.py_td):
                if p is not None:
                    p.close()
            if self.peer_rados is not None:
                self.peer_rados.shutdown()
            if self.ceph is not None:
                self.ceph.shutdown()

    # -- helpers the cases share -------------------------------------------
    def ensure_thawed(self):
        """If the guest's agent says frozen, thaw it (a safety net: every
        freeze already has its thaw in a finally)."""
        name = self.env["RBDSNAPD_TEST_GUEST"]
        for _ in range(10):
            try:
                dom = self.py_guest.domain(name)
                out = libvirt_qemu.qemuAgentCommand(
                    dom, '{"execute":"guest-fsfreeze-status"}', 10, 0)
                if json.loads(out).get("return") != "frozen":
                    return
                log("the guest is frozen: thawing it")
                dom.fsThaw()
            except libvirt.libvirtError as exc:
                log(f"checking the guest is thawed: {exc}")
            time.sleep(0.5)
        raise RuntimeError("could not confirm the guest is thawed")

    def wait_libvirt(self, timeout=120.0):
        """Before a guest run: libvirtd answers us and the guest daemon
        (libvirtd may be restarted by other work on this machine)."""
        self.py_guest.domain(self.env["RBDSNAPD_TEST_GUEST"], wait=timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.guest_daemon.client(timeout=10) as c:
                    if c.call("daemon.status")["libvirt"]["connected"]:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the guest daemon has no libvirt connection")
            time.sleep(0.2)

    def delete_image(self, client, pool, name):
        """Remove an image the daemon made (snapshot.delete; librbd if the
        daemon refuses). Absent is fine: a failed job rolled back."""
        try:
            client.call("snapshot.delete", {"pool": pool, "image": name})
            return
        except RpcError as exc:
            if exc.kind == "image_not_found":
                return
            why = exc
        except OSError as exc:
            why = exc
        if self.ceph.remove_image(pool, name):
            log(f"clean-up: snapshot.delete of {pool}/{name} failed ({why}); removed via librbd")

    def leftovers(self):
        """Anything of this run still in the cluster, or the guest frozen."""
        found = []
        for pool in (self.images_pool, self.env["RBDSNAPD_TEST_POOL_VMS"]):
            for image in self.ceph.images(pool, self.name("")):
                found.append(f"image {pool}/{image}")
                self.ceph.remove_image(pool, image)
        sources = [self.env["RBDSNAPD_TEST_GUEST_IMAGE"], "/".join(e2e.SOURCE)] + \
                  [f"vms/testdrv-{n:02d}-vda" for n in range(1, 17)] + \
                  [f"{p}/{i}" for _, p, i in multidisk.data_disks(self.env)]
        for spec in sources:
            for snap in self.ceph.all_snaps(*spec.split("/", 1)):
                found.append(f"snapshot {spec}@{snap['name']} ({snap.get('namespace')})")
        self.ensure_thawed()
        return found

    def counters(self):
        out = {}
        for d in self.daemons:
            try:
                with d.client(timeout=10) as c:
                    out[d.name] = c.call("daemon.status")["counters"]
            except Exception as exc:  # noqa: BLE001
                out[d.name] = str(exc)
        return out

    # -- the run -----------------------------------------------------------
    def main(self):
        started = report.now_utc()
        t0 = time.monotonic()
        self.load = [report.load()]
        results = []
        left = []
        try:
            self.start()
            for key, label, case in CASES:
                if key not in self.args.cases:
                    continue
                log(f"{label} …")
                try:
                    out = case(self)
                except Exception as exc:  # noqa: BLE001 - the next case may still run
                    failed = CaseResult(label, label)
                    failed.errors.append(f"{type(exc).__name__}: {exc}")
                    out = [failed]
                for r in out if isinstance(out, list) else [out]:
                    results.append(r)
                    print(r.markdown(), flush=True)
            try:
                left = self.leftovers()
            except Exception as exc:  # noqa: BLE001
                left = [f"the leftover check failed: {exc}"]
            for name, counters in self.counters().items():
                self.notes.append(f"`{name}` counters at the end: `{json.dumps(counters)}`")
            reconnects = self.py_guest.reconnects if self.py_guest else 0
            if reconnects:
                self.notes.append(f"libvirtd went away {reconnects} time(s) during the run "
                                  "(other work on the machine); runs waited for it.")
        finally:
            self.stop()
        took = time.monotonic() - t0
        self.load.append(report.load())
        return self.finish(results, left, started, took)

    def partial(self):
        return any(k not in self.args.cases for k, _, _ in CASES)

    def plot_multidisk(self, results, errors):
        """Case 7's plot beside the report, linked from its section."""
        md = next((r for r in results if r.key == "multidisk" and r.data), None)
        if md is None:
            return
        name = "multidisk-freeze-window.png"
        path = os.path.join(os.path.dirname(os.path.abspath(self.args.out)), name)
        try:
            report.plot_multidisk(md, path)
            md.tables.append(f"![freeze window against the number of disks]({name})")
            log(f"plot written to {path}")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"multi-disk plot: {exc}")

    def finish(self, results, left, started, took):
        target_rows = report.targets(self, results)
        print("### Targets (issues 7, 14)\n\n" + table(["target", "measured", "goal", ""],
                                                       target_rows) + "\n")
        errors = [e for r in results for e in r.errors] + [f"left behind: {x}" for x in left]
        for note in self.notes:
            print(note)
        if self.args.plot:
            try:
                report.plot(results, self.args.plot)
                log(f"plot written to {self.args.plot}")
            except Exception as exc:  # noqa: BLE001
                errors.append(f"plot: {exc}")
        if self.args.out:
            self.plot_multidisk(results, errors)
            housekeeping = self.notes + [f"left behind: {x}" for x in left]
            if self.partial() and os.path.exists(self.args.out):
                # only some cases ran: their sections go into the report of
                # the full run, which keeps the others' numbers
                note = report.provenance(self, started, took)
                for r in results:
                    r.notes.append(note + "".join(f" {n}." for n in housekeeping))
                with open(self.args.out) as f:
                    text = report.merge(f.read(), results, target_rows)
            else:
                text = report.markdown(self, results, target_rows, self.args.plot,
                                       self.args.out, started, took)
                if housekeeping:
                    text += "\n### Housekeeping\n\n" + "\n".join(
                        f"- {n}" for n in housekeeping) + "\n"
            os.makedirs(os.path.dirname(os.path.abspath(self.args.out)), exist_ok=True)
            with open(self.args.out, "w") as f:
                f.write(text)
            log(f"report written to {self.args.out}")
        if self.args.json:
            with open(self.args.json, "w") as f:
                json.dump({r.key: r.data for r in results}, f, indent=1, default=str)
        if errors:
            log(f"{len(errors)} error(s):")
            for e in errors:
                log(f"  {e}")
            return 1
        log(f"done in {took:.0f} s, no errors")
        return 0
