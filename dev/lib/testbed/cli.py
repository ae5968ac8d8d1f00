"""Command line of dev/testbed: `up`, `vm-up`, `down`, `leftovers`, `health`, `restart-libvirtd`,
`pause`/`resume` (SIGSTOP/SIGCONT of a bed daemon, to make a hang), `migrate`
(the guest to the migration target and back); timings, the env file."""
import argparse
import json
import os
import signal
import shutil
import sys
import time

from . import cluster as ceph_cluster
from . import guest as guest_mod
from . import health, libvirtd, migration, procs
from . import sysvm, testdriver
from .procs import BedError
from .state import State


def parse(argv):
    p = argparse.ArgumentParser(prog="dev/testbed", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start the bed and write DIR/env")
    up.add_argument("--dir", required=True, help="bed directory (created)")
    # below the kernel's ephemeral range (32768+), so that no outgoing
    # connection can be holding a port the cluster wants to listen on
    up.add_argument("--port-base", type=int, default=26800,
                    help="first of 50 ports the cluster uses (default 26800)")
    up.add_argument("--store", choices=("memstore", "bluestore"), default="memstore",
                    help="OSD object store: memstore (fast, RAM) or bluestore "
                         "(sparse file, survives an OSD kill)")
    up.add_argument("--mgr", action="store_true", help="also start a ceph-mgr")
    up.add_argument("--no-libvirtd", action="store_true",
                    help="Ceph and the test-driver domains only")
    up.add_argument("--no-guest", action="store_true", help="do not boot the guest")
    up.add_argument("--migration-target", action="store_true",
                    help="also start a second libvirtd (own mount namespace) to "
                         "live-migrate the guest to (port N+49)")
    up.add_argument("--keep-on-failure", action="store_true",
                    help="leave a failed bed running for inspection")
    vm = sub.add_parser("vm-up", help="boot the systemd VM (Debian 12, systemd as PID 1) "
                                      "with its own Ceph cluster, and write DIR/env")
    vm.add_argument("--dir", required=True, help="bed directory (created)")
    vm.add_argument("--port-base", type=int, default=27600,
                    help="first of 50 ports its cluster uses (default 27600)")
    vm.add_argument("--deb", required=True, help="the rbdsnapd .deb to put in the VM")
    down = sub.add_parser("down", help="stop what `up` or `vm-up` started and remove DIR")
    down.add_argument("--dir", required=True)
    down.add_argument("--keep", action="store_true", help="keep DIR (logs)")
    left = sub.add_parser("leftovers", help="fail if a process of the bed in DIR still runs")
    left.add_argument("--dir", required=True)
    well = sub.add_parser("health", help="report on the bed in DIR: its processes, Ceph's "
                                         "health, memory, OOM kills, the daemons' logs")
    well.add_argument("--dir", required=True)
    again = sub.add_parser("restart-libvirtd",
                           help="stop the bed's libvirtd and start it again (guests keep running)")
    again.add_argument("--down-secs", type=float, default=0.0,
                       help="how long libvirtd stays down (default 0)")
    mig = sub.add_parser("migrate", help="live-migrate the bed's guest to the migration "
                                         "target or back home")
    mig.add_argument("--dir", required=True)
    mig.add_argument("--to", required=True, choices=("target", "home"))
    mig.add_argument("--bandwidth", type=int, metavar="MIB_S",
                     help="cap the migration at this many MiB/s (1: a slow one)")
    mig.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                     help="wait until it is over (default); --no-wait: start it in "
                          "the background (output to DIR/migration/migrate.log)")
    for name, what in (("pause", "SIGSTOP"), ("resume", "SIGCONT")):
        hang = sub.add_parser(name, help=f"{what} a daemon of the bed in DIR (a hang, not a crash)")
        hang.add_argument("--dir", required=True)
        hang.add_argument("daemon", help="mon, osd.0, mgr or libvirtd")
    return p.parse_args(argv)


def bed_pid(root, daemon):
    """The pid of a daemon the bed in ROOT started (libvirtd: the shared one)."""
    if daemon == "libvirtd":
        with open(libvirtd.REGISTRY) as f:
            pid = json.load(f).get("started", {}).get("libvirtd")
    else:
        with open(os.path.join(root, "state.json")) as f:
            pid = json.load(f).get("cluster", {}).get("pids", {}).get(daemon)
    if not pid or not procs.alive(pid):
        raise BedError(f"no running {daemon} of the bed in {root}")
    return pid


def cmd_signal(root, daemon, sig):
    pid = bed_pid(os.path.abspath(root), daemon)
    os.kill(pid, sig)
    print(f"testbed: {daemon} (pid {pid}) {signal.Signals(sig).name}", file=sys.stderr)
    return 0


def main(argv):
    args = parse(argv)
    try:
        if args.cmd == "up":
            return cmd_up(args)
        if args.cmd == "vm-up":
            return cmd_vm_up(args)
        if args.cmd == "leftovers":
            return cmd_leftovers(args.dir)
        if args.cmd == "health":
            print(health.report(args.dir), file=sys.stderr)
            return 0
        if args.cmd == "migrate":
            return cmd_migrate(args)
        if args.cmd in ("pause", "resume"):
            sig = signal.SIGSTOP if args.cmd == "pause" else signal.SIGCONT
            return cmd_signal(args.dir, args.daemon, sig)
        if args.cmd == "restart-libvirtd":
            start = time.monotonic()
            libvirtd.restart(args.down_secs)
            print(f"testbed: libvirtd restarted in {time.monotonic() - start:.2f} s", file=sys.stderr)
            return 0
        return cmd_down(args.dir, args.keep)
    except BedError as exc:
        print(f"testbed: error: {exc}", file=sys.stderr)
        return 1


def timed(label, timings, step):
    start = time.monotonic()
    result = step()
    timings[label] = round(time.monotonic() - start, 2)
    print(f"testbed: {label} ready in {timings[label]:.2f} s", file=sys.stderr)
    return result


def cmd_up(args):
    root = os.path.abspath(args.dir)
    if os.path.exists(os.path.join(root, "state.json")):
        raise BedError(f"{root} already holds a bed: run `dev/testbed down --dir {root}`")
    os.makedirs(root, exist_ok=True)
    state = State(root)
    env = {"RBDSNAPD_TEST_BED": root}
    timings = {}
    try:
        cluster = ceph_cluster.Cluster(root, args.port_base, args.store)
        timed("ceph cluster", timings, lambda: cluster.up(state))
        if args.mgr:
            timed("ceph mgr", timings, lambda: cluster.start_mgr(state))
        env.update(cluster_env(cluster, args.mgr))
        env.update(testdriver.create(root, cluster))
        if not args.no_libvirtd:
            timed("libvirtd", timings, lambda: libvirtd.ensure_running(state, root))
            env["RBDSNAPD_TEST_LIBVIRT_URI"] = libvirtd.URI
            if not args.no_guest:
                env.update(timed("guest agent", timings,
                                 lambda: guest_mod.boot(root, cluster, state)))
            if args.migration_target:
                port = args.port_base + migration.PORT_OFFSET
                env.update(timed("migration target", timings,
                                 lambda: migration.up(root, cluster, state, port)))
    except BaseException as exc:
        if args.keep_on_failure:
            print(f"testbed: up failed; bed left in {root}", file=sys.stderr)
        else:
            print(f"testbed: up failed ({exc!r}); tearing down", file=sys.stderr)
            cmd_down(root, keep=True)
        raise
    state.set("timings", timings)
    with open(os.path.join(root, "timings.txt"), "w") as f:
        f.writelines(f"testbed: {k} ready in {v:.2f} s\n" for k, v in timings.items())
    write_env(root, env)
    print(f"testbed: up in {root}; source {root}/env", file=sys.stderr)
    return 0


def cmd_vm_up(args):
    root = os.path.abspath(args.dir)
    if os.path.exists(os.path.join(root, "state.json")):
        raise BedError(f"{root} already holds a bed: run `dev/testbed down --dir {root}`")
    os.makedirs(root, exist_ok=True)
    state = State(root)
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
    timings = {}
    try:
        env = timed("systemd VM", timings,
                    lambda: sysvm.up(root, repo, args.port_base, args.deb, state))
    except BaseException as exc:
        print(f"testbed: vm-up failed ({exc!r}); tearing down", file=sys.stderr)
        cmd_down(root, keep=True)
        raise
    with open(os.path.join(root, "timings.txt"), "w") as f:
        f.writelines(f"testbed: {k} ready in {v:.2f} s\n" for k, v in timings.items())
    write_env(root, env)
    print(f"testbed: VM up in {root}; source {root}/env", file=sys.stderr)
    return 0


def cluster_env(cluster, with_mgr):
    return {
        "RBDSNAPD_TEST_CEPH_CONF": cluster.conf,
        # the daemon's least-privilege user; admin for set-up and checks
        "RBDSNAPD_TEST_CEPH_ID": ceph_cluster.DAEMON_USER,
        "RBDSNAPD_TEST_CEPH_ADMIN_ID": "admin",
        "RBDSNAPD_TEST_FSID": cluster.fsid,
        "RBDSNAPD_TEST_POOL_VMS": "vms",
        "RBDSNAPD_TEST_POOL_IMAGES": "images",
        "RBDSNAPD_TEST_MON_V1": f"127.0.0.1:{cluster.mon_v1}",
        "RBDSNAPD_TEST_CEPH_MGR": "1" if with_mgr else "0",
        # the ceph/rbd CLIs then use the bed's cluster, never /etc/ceph
        "CEPH_CONF": cluster.conf,
    }


def write_env(root, env):
    path = os.path.join(root, "env")
    with open(path, "w") as f:
        for key, value in sorted(env.items()):
            f.write(f"export {key}='{value}'\n")


def cmd_down(root, keep):
    root = os.path.abspath(root)
    if not os.path.exists(os.path.join(root, "state.json")):
        print(f"testbed: nothing to stop in {root}", file=sys.stderr)
        return 0
    state = State(root)
    errors = []
    steps = [
        ("systemd VM", lambda: sysvm.down(state.get("sysvm"), root)),
        ("migration target", lambda: migration.down(state.get("migration"))),
        ("guest", lambda: guest_mod.down(state.get("guest"))),
        ("libvirtd", lambda: libvirtd.down(state.get("libvirtd"))),
        ("ceph cluster", lambda: ceph_cluster.down(state.get("cluster"))),
    ]
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # keep going: stop everything we can
            errors.append(f"{name}: {exc}")
    if errors:
        raise BedError("down incomplete: " + "; ".join(errors))
    if keep:
        os.rename(os.path.join(root, "state.json"), os.path.join(root, "state.json.down"))
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(f"testbed: down ({root})", file=sys.stderr)
    return 0


def cmd_migrate(args):
    """The bed's guest from where it is to --to; refuses if it is not there."""
    root = os.path.abspath(args.dir)
    state = State(root)
    record, domain = state.get("migration"), (state.get("guest") or {}).get("domain")
    if not record or not domain:
        raise BedError(f"the bed in {root} has no migration target or no guest")
    if migration.running_migration(record):
        raise BedError(f"a migration (virsh pid {record['migrate_pid']}) is still running")
    src, dst = (libvirtd.URI, record["uri"]) if args.to == "target" else (record["uri"], libvirtd.URI)
    if not migration.active_on(src, domain):
        raise BedError(f"{domain} is not running on {src}: already {args.to}?")
    log = os.path.join(root, "migration", "migrate.log")
    start = time.monotonic()
    pid = migration.migrate(domain, dst, record["port"], args.bandwidth, from_uri=src,
                            wait=args.wait, log=log)
    if pid:
        state.update("migration", lambda r: r.update(migrate_pid=pid))
        print(f"testbed: migrating {domain} to {args.to} (virsh pid {pid}, log {log})",
              file=sys.stderr)
    else:
        print(f"testbed: {domain} migrated to {args.to} in {time.monotonic() - start:.2f} s",
              file=sys.stderr)
    return 0


def cmd_leftovers(root):
    """Every bed process names the bed directory on its command line (ceph
    daemons their ceph.conf, QEMU its console log): none may survive `down`."""
    root = os.path.abspath(root)
    pids = procs.pids_matching(root + "/")
    for pid in pids:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        print(f"testbed: left running: {pid} {cmd[:200]}", file=sys.stderr)
    return 1 if pids else 0
