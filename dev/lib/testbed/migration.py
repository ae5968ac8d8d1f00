"""A second libvirtd on the same machine, as a live-migration target.

libvirt refuses to migrate a domain to the host it runs on (same host UUID),
and libvirtd's sockets, state, caches and config all live at fixed paths. The
target therefore runs in a private mount namespace (`unshare -m`) in which
MIGRATION_DIRS, directories under the bed's `migration/`, are bind-mounted
over /run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt
and /etc/libvirt. Its libvirtd.conf gives it its own host_uuid and puts its
sockets in `migration/sock`, which both namespaces see (so does the guest's
kernel, initrd and console log under the bed directory, /tmp being shared).
Clients reach it as qemu+unix:///system?socket=BED/migration/sock/libvirt-sock.

Its QEMU writes its own logs (stdio_handler = "file": no virtlogd in there),
and it holds the bed's ceph secret under the same UUID, so the guest's RBD
disks open on either side. Migrations are plain `virsh migrate --live` over
tcp://127.0.0.1:PORT without --persistent or --undefinesource: the bed's
guest stays defined at home (shut off, reason "migrated", while away) and is
transient on the target, so it can go back and forth any number of times.
"""
import base64
import os
import shlex
import shutil
import uuid

from . import guest, libvirtd, procs
from .procs import BedError

# bed's migration/<name> -> the path it hides inside the target's namespace
MIGRATION_DIRS = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "cache": "/var/cache/libvirt",
    "log": "/var/log/libvirt",
    "etc": "/etc/libvirt",
}
# the one port of the cluster's block of 50 that Ceph leaves alone
PORT_OFFSET = 49


def paths(root):
    base = os.path.join(root, "migration")
    return {"base": base, "sock": os.path.join(base, "sock", "libvirt-sock"),
            "stdout": os.path.join(base, "libvirtd.stdout"),
            **{name: os.path.join(base, name) for name in MIGRATION_DIRS}}


def uri(root):
    return "qemu+unix:///system?socket=" + paths(root)["sock"]


def host_uuid(root):
    """Stable per bed, and never the machine's own."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "rbdsnapd-testbed/migration-target/" + root))


def write_config(root):
    """libvirtd.conf and qemu.conf of the target (the host's qemu.conf plus
    file logging); the host's QEMU capabilities cache, to skip the probe."""
    p = paths(root)
    for d in [os.path.dirname(p["sock"])] + [p[name] for name in MIGRATION_DIRS]:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(p["etc"], "libvirtd.conf"), "w") as f:
        f.write(f'unix_sock_dir = "{os.path.dirname(p["sock"])}"\n'
                f'host_uuid = "{host_uuid(root)}"\n')
    with open("/etc/libvirt/qemu.conf") as src, open(os.path.join(p["etc"], "qemu.conf"), "w") as f:
        f.write(src.read() + '\n# rbdsnapd test bed: no virtlogd in the namespace\n'
                             'stdio_handler = "file"\n')
    caps = "/var/cache/libvirt/qemu/capabilities"
    if os.path.isdir(caps):
        shutil.copytree(caps, os.path.join(p["cache"], "qemu", "capabilities"), dirs_exist_ok=True)


def start_argv(root):
    """unshare, bind-mount the private dirs, exec libvirtd (same pid)."""
    p = paths(root)
    mounts = " && ".join(f"mount --bind {shlex.quote(p[name])} {target}"
                         for name, target in MIGRATION_DIRS.items())
    pidfile = shlex.quote(os.path.join(p["base"], "libvirtd.pid"))
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f"{mounts} && exec libvirtd -p {pidfile}"]


def up(root, cluster, state, port):
    """Start the target, wait for its QEMU driver, give it the ceph secret."""
    import libvirt
    write_config(root)
    record = {"uri": uri(root), "port": port, "sock": paths(root)["sock"],
              "run": paths(root)["run"]}
    state.set("migration", record)
    log = paths(root)["stdout"]
    record["pid"] = procs.spawn(start_argv(root), log)
    state.set("migration", record)
    try:
        procs.wait_for("migration target socket", lambda: libvirtd.answers(record["sock"]), 60)
        libvirtd.wait_for_driver(record["uri"])
    except BedError as exc:
        raise BedError(f"{exc}\n--- {log} ---\n{procs.tail(log)}")
    conn = libvirt.open(record["uri"])
    try:
        secret = guest.secret_uuid(cluster)
        sec = conn.secretDefineXML(guest.secret_xml(secret, cluster.fsid))
        sec.setValue(base64.b64decode(guest.admin_key(cluster)))
    finally:
        conn.close()
    return {"RBDSNAPD_TEST_MIGRATION_URI": record["uri"],
            "RBDSNAPD_TEST_MIGRATION_PORT": str(port)}


def active_on(conn_uri, domain):
    """True when `domain` runs (or is arriving) on the libvirtd at conn_uri."""
    import libvirt
    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open(conn_uri)
    try:
        return bool(conn.lookupByName(domain).isActive())
    except libvirt.libvirtError:
        return False
    finally:
        conn.close()


def migrate_argv(domain, to_uri, port, bandwidth_mib=None, from_uri=libvirtd.URI):
    argv = ["virsh", "-c", from_uri, "migrate", "--live", domain, to_uri,
            "--migrateuri", f"tcp://127.0.0.1:{port}", "--listen-address", "127.0.0.1"]
    if bandwidth_mib:
        argv += ["--bandwidth", str(bandwidth_mib)]
    return argv


def migrate(domain, to_uri, port, bandwidth_mib=None, from_uri=libvirtd.URI,
            wait=True, log=None, timeout=900):
    """Live-migrate domain from from_uri to to_uri over tcp://127.0.0.1:port.

    wait=False starts virsh in the background (output to log) and returns
    its pid; otherwise returns when the migration is over, or raises."""
    argv = migrate_argv(domain, to_uri, port, bandwidth_mib, from_uri)
    if not wait:
        return procs.spawn(argv, log or os.devnull)
    procs.run(argv, timeout=timeout)
    return None


def argv_of(pid):
    """A live process's argv (bytes), [] if it is gone: a recorded pid may
    have been reused, so check what it runs before signalling it."""
    if not pid or not procs.alive(pid):
        return []
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def running_migration(record):
    """The pid of the bed's background `virsh migrate` while it runs, or None."""
    pid = (record or {}).get("migrate_pid")
    argv = argv_of(pid)
    return pid if argv[:1] == [b"virsh"] and b"migrate" in argv else None


def destroy_all(conn_uri):
    """Destroy every domain running on the target: QEMU outlives libvirtd."""
    import libvirt
    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.open(conn_uri)
    try:
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                dom.destroy()
            except libvirt.libvirtError as exc:
                # it left (migrated home, or died) between list and destroy
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
    finally:
        conn.close()


def down(record):
    """Stop a background migration (libvirt cancels a migration whose
    client left), destroy what runs on the target, stop the target."""
    if not record:
        return
    procs.stop(running_migration(record), "virsh migrate")
    if record.get("pid") and procs.alive(record["pid"]) and libvirtd.answers(record["sock"]):
        destroy_all(record["uri"])
    procs.stop(record.get("pid"), "migration target libvirtd")
    for pid in qemu_pids(record.get("run")):  # a target that could not answer
        procs.stop(pid, "QEMU on the migration target")


def qemu_pids(run_dir):
    """Running QEMUs of the target's pid files (its private /run/libvirt/qemu)."""
    pids = []
    qemu_dir = os.path.join(run_dir or "/nonexistent", "qemu")
    for name in os.listdir(qemu_dir) if os.path.isdir(qemu_dir) else []:
        if name.endswith(".pid"):
            with open(os.path.join(qemu_dir, name)) as f:
                pid = int(f.read().strip() or 0)
            if b"qemu-system" in b"".join(argv_of(pid)[:1]):
                pids.append(pid)
    return pids
