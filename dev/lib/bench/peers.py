"""The two peers rbdsnapd is measured against, doing the same work:

- `CliPeer`: OpenNebula's way, one process per step — `virsh domfsfreeze`,
  `rbd snap create`, `virsh domfsthaw`, then Nova's sequence with the rbd
  CLI (protect, clone, flatten, unprotect + remove, snap + protect).
- `PyPeer`: Nova's way in one long-lived process — python3-libvirt and
  python3-rbd, connections opened once; for the freeze window the domain
  and image are opened before the freeze, so freeze → snap → thaw is all
  that is timed (the physical floor); with several disks, one snapshot
  after another inside the one freeze.

Every freeze is followed by a thaw in a `finally`, retried if it fails.
Each method returns seconds (perf_counter), and for the full sequence also
the flatten's share.
"""
import contextlib
import subprocess
import time

import libvirt
import rbd

now = time.perf_counter


class PeerError(Exception):
    pass


def _retry_thaw(thaw, attempts=5):
    """Thaw; on failure retry (a guest must never stay frozen)."""
    last = None
    for i in range(attempts):
        try:
            return thaw()
        except Exception as exc:  # noqa: BLE001 - every failure is retried
            last = exc
            time.sleep(0.2 * (i + 1))
    raise PeerError(f"thaw failed {attempts} times: {last}")


class CliPeer:
    """virsh and rbd commands, as a shell script would run them."""

    def __init__(self, uri, client_id, env):
        self.uri = uri
        self.client_id = client_id
        self.env = env

    def _run(self, argv, timeout):
        out = subprocess.run(argv, env=self.env, stdin=subprocess.DEVNULL,
                             capture_output=True, timeout=timeout)
        if out.returncode != 0:
            raise PeerError(f"{' '.join(argv[:4])}…: {out.stderr.decode().strip()[-300:]}")

    def virsh(self, *args):
        self._run(["virsh", "-q", "-c", self.uri, *args], timeout=120)

    def rbd(self, *args):
        self._run(["rbd", "--id", self.client_id, *args], timeout=3600)

    def _frozen_snap(self, domain, spec):
        """freeze → snap → thaw: the three steps' seconds."""
        t = [now()]
        try:
            self.virsh("domfsfreeze", domain)
            t.append(now())
            self.rbd("snap", "create", "--no-progress", spec)
            t.append(now())
        finally:
            _retry_thaw(lambda: self.virsh("domfsthaw", domain))
        t.append(now())
        return [b - a for a, b in zip(t, t[1:])]

    def freeze_window(self, domain, pool, image, snap):
        """Seconds frozen, and the freeze, snap and thaw steps."""
        t0 = now()
        steps = self._frozen_snap(domain, f"{pool}/{image}@{snap}")
        return now() - t0, steps

    def snapshot(self, domain, pool, image, tmp, dst_pool, dst):
        """Nova's direct snapshot, frozen: returns (total, flatten) seconds."""
        src, clone = f"{pool}/{image}@{tmp}", f"{dst_pool}/{dst}"
        t0 = now()
        self._frozen_snap(domain, src)
        self.rbd("snap", "protect", src)
        try:
            self.rbd("clone", src, clone)
            t1 = now()
            self.rbd("flatten", "--no-progress", clone)
            flatten = now() - t1
        finally:
            self.rbd("snap", "unprotect", src)
            self.rbd("snap", "rm", "--no-progress", src)
        self.rbd("snap", "create", "--no-progress", f"{clone}@snap")
        self.rbd("snap", "protect", f"{clone}@snap")
        return now() - t0, flatten


class PyPeer:
    """python3-libvirt + python3-rbd in this process, connections kept open."""

    def __init__(self, uri, cluster):
        self.uri = uri
        self.conn = libvirt.open(uri)
        self.cluster = cluster  # a connected rados.Rados of its own
        self.ios = {}
        self.reconnects = 0

    def close(self):
        for io in self.ios.values():
            io.close()
        try:
            self.conn.close()
        except libvirt.libvirtError:
            pass

    def domain(self, name, wait=120.0):
        """Look a domain up; if libvirtd went away (restarted by someone
        else), reconnect first — never inside a timed section's freeze."""
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError:
            if self.conn.isAlive():
                raise
        deadline = time.monotonic() + wait
        while True:
            try:
                self.conn = libvirt.open(self.uri)
                self.reconnects += 1
                return self.conn.lookupByName(name)
            except libvirt.libvirtError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def io(self, pool):
        if pool not in self.ios:
            self.ios[pool] = self.cluster.open_ioctx(pool)
        return self.ios[pool]

    @staticmethod
    def _frozen_snap(dom, imgs, snap):
        """freeze → snap of each image, one after another (as Nova and
        Proxmox do) → thaw: the three steps' seconds."""
        t = [now()]
        try:
            dom.fsFreeze()
            t.append(now())
            for img in imgs:
                img.create_snap(snap)
            t.append(now())
        finally:
            _retry_thaw(dom.fsThaw)
        t.append(now())
        return [b - a for a, b in zip(t, t[1:])]

    def freeze_window(self, domain, pool, image, snap):
        """Seconds frozen, and the freeze, snap and thaw steps."""
        return self.freeze_window_disks(domain, [(pool, image)], snap)

    def freeze_window_disks(self, domain, disks, snap):
        """The same for several (pool, image) disks of one domain: all of
        them opened before the freeze, so that only the snapshots are in it."""
        dom = self.domain(domain)
        with contextlib.ExitStack() as opened:
            imgs = [opened.enter_context(rbd.Image(self.io(pool), image))
                    for pool, image in disks]
            t0 = now()
            steps = self._frozen_snap(dom, imgs, snap)
            return now() - t0, steps

    def snapshot(self, domain, pool, image, tmp, dst_pool, dst):
        """Nova's direct snapshot, frozen: returns (total, flatten) seconds."""
        src_io, dst_io = self.io(pool), self.io(dst_pool)
        t0 = now()
        dom = self.domain(domain)
        clone = None
        try:
            with rbd.Image(src_io, image) as img:
                self._frozen_snap(dom, [img], tmp)
                img.protect_snap(tmp)
                try:
                    rbd.RBD().clone(src_io, image, tmp, dst_io, dst)
                    clone = rbd.Image(dst_io, dst)
                    t1 = now()
                    clone.flatten()
                    flatten = now() - t1
                finally:
                    img.unprotect_snap(tmp)
                    img.remove_snap(tmp)
            clone.create_snap("snap")
            clone.protect_snap("snap")
        finally:
            if clone is not None:
                clone.close()
        return now() - t0, flatten
