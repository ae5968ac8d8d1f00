"""A real libvirtd + virtlogd, started without systemd.

libvirtd is machine-wide (its sockets live in /run/libvirt): if one already
answers we use it; otherwise we start virtlogd and libvirtd. Beds register
as users in /run/rbdsnapd-testbed/libvirtd.json, and the last bed out stops
the daemons a bed started (never one that was running before any bed).
"""
import contextlib
import fcntl
import grp
import json
import os
import socket

from . import procs

URI = "qemu:///system"
LIBVIRT_SOCK = "/run/libvirt/libvirt-sock"
VIRTLOGD_SOCK = "/run/libvirt/virtlogd-sock"


def answers(path):
    """True when something accepts connections on the Unix socket at path."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def fix_kvm_permissions():
    """What udev would do: /dev/kvm group kvm, mode 660.

    Left root:root 0600, every domain start re-probes QEMU (4-60 s).
    """
    if not os.path.exists("/dev/kvm"):
        return
    try:
        os.chown("/dev/kvm", -1, grp.getgrnam("kvm").gr_gid)
        os.chmod("/dev/kvm", 0o660)
    except (KeyError, PermissionError):
        pass


# libvirtd is shared by every bed on the machine: a registry of the beds
# using it, so that the last one out stops it (and only if a bed started it).
REGISTRY = "/run/rbdsnapd-testbed/libvirtd.json"


@contextlib.contextmanager
def registry():
    """The registry, locked against other beds for the duration."""
    os.makedirs(os.path.dirname(REGISTRY), exist_ok=True)
    with open(REGISTRY + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(REGISTRY) as f:
                reg = json.load(f)
        except (OSError, ValueError):
            reg = {"started": {}, "users": []}
        # a bed removed without `down` (a killed run) no longer counts
        reg["users"] = [u for u in reg["users"] if os.path.exists(os.path.join(u, "state.json"))]
        if not any(procs.alive(pid) for pid in reg["started"].values()):
            reg["started"] = {}
        yield reg
        with open(REGISTRY + ".tmp", "w") as f:
            json.dump(reg, f)
        os.replace(REGISTRY + ".tmp", REGISTRY)


def ensure_running(state, root):
    fix_kvm_permissions()
    os.makedirs("/run/libvirt", exist_ok=True)
    logdir = "/var/log/libvirt"
    os.makedirs(logdir, exist_ok=True)
    with registry() as reg:
        if not answers(VIRTLOGD_SOCK):
            reg["started"]["virtlogd"] = procs.spawn(["virtlogd"], os.path.join(logdir, "virtlogd.stdout"))
            procs.wait_for("virtlogd", lambda: answers(VIRTLOGD_SOCK), 30)
        if not answers(LIBVIRT_SOCK):
            reg["started"]["libvirtd"] = procs.spawn(["libvirtd"], os.path.join(logdir, "libvirtd.stdout"))
            procs.wait_for("libvirtd socket", lambda: answers(LIBVIRT_SOCK), 60)
        if root not in reg["users"]:
            reg["users"].append(root)
    state.set("libvirtd", {"user": root})
    wait_for_driver()


def wait_for_driver(uri=URI, timeout=180):
    """The socket answers before the QEMU driver has probed capabilities
    (8-60 s on a cold cache): wait until a real call succeeds."""
    import libvirt
    libvirt.registerErrorHandler(lambda *_: None, None)

    def connected():
        conn = libvirt.open(uri)
        try:
            return conn.getCapabilities() is not None
        finally:
            conn.close()
    procs.wait_for("libvirtd qemu driver", connected, timeout, interval=0.2)


def restart(down_secs=0.0):
    """Stop the libvirtd a bed started and start it again, `down_secs` later
    (for tests of clients that must survive it). Running guests keep
    running: libvirtd reattaches to their QEMU. Refuses to touch a libvirtd
    no bed started."""
    import time
    with registry() as reg:
        pid = reg["started"].get("libvirtd")
        if not pid or not procs.alive(pid):
            raise procs.BedError("no libvirtd started by a bed is running: not restarting")
        procs.stop(pid, "libvirtd")
        time.sleep(down_secs)
        reg["started"]["libvirtd"] = procs.spawn(
            ["libvirtd"], os.path.join("/var/log/libvirt", "libvirtd.stdout"))
        procs.wait_for("libvirtd socket", lambda: answers(LIBVIRT_SOCK), 60)
    wait_for_driver()


def down(record):
    """Leave the registry; the last bed out stops what a bed started."""
    if not record:
        return
    with registry() as reg:
        reg["users"] = [u for u in reg["users"] if u != record.get("user")]
        if reg["users"]:
            return
        for name in ("libvirtd", "virtlogd"):
            if name in reg["started"]:
                procs.stop(reg["started"].pop(name), name)
