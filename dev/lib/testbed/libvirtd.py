"""A real libvirtd + virtlogd, started without systemd.

libvirtd is machine-wide (its sockets live in /run/libvirt): if one already
answers we use it and leave it alone; otherwise we start virtlogd and libvirtd
and record their pids so that `down` stops exactly what we started.
"""
import grp
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


def ensure_running(state):
    fix_kvm_permissions()
    record = {"started": {}}
    state.set("libvirtd", record)
    os.makedirs("/run/libvirt", exist_ok=True)
    logdir = "/var/log/libvirt"
    os.makedirs(logdir, exist_ok=True)
    if not answers(VIRTLOGD_SOCK):
        pid = procs.spawn(["virtlogd"], os.path.join(logdir, "virtlogd.stdout"))
        state.update("libvirtd", lambda r: r["started"].__setitem__("virtlogd", pid))
        procs.wait_for("virtlogd", lambda: answers(VIRTLOGD_SOCK), 30)
    if not answers(LIBVIRT_SOCK):
        pid = procs.spawn(["libvirtd"], os.path.join(logdir, "libvirtd.stdout"))
        state.update("libvirtd", lambda r: r["started"].__setitem__("libvirtd", pid))
        procs.wait_for("libvirtd socket", lambda: answers(LIBVIRT_SOCK), 60)
    # the socket answers before the QEMU driver has probed capabilities
    # (8-60 s on a cold cache): wait until a real call succeeds
    import libvirt
    libvirt.registerErrorHandler(lambda *_: None, None)

    def connected():
        conn = libvirt.open(URI)
        try:
            return conn.getCapabilities() is not None
        finally:
            conn.close()
    procs.wait_for("libvirtd qemu driver", connected, 180, interval=0.2)


def down(record):
    if not record:
        return
    started = record.get("started", {})
    for name in ("libvirtd", "virtlogd"):
        if name in started:
            procs.stop(started[name], name)
