"""The bed's cluster through python3-rados/-rbd (clean-up, checks, filling
a source image) and the `rados bench` figure of the cluster's write
throughput. Clean-up is never timed."""
import json
import re
import subprocess
import time

import rados
import rbd


def connect(conf, client_id):
    """A librados client without an admin socket (its path names the pid:
    a second client in this process would collide with the first)."""
    cluster = rados.Rados(conffile=conf, name=f"client.{client_id}", conf={"admin_socket": ""})
    cluster.connect(timeout=10)
    return cluster


class Ceph:
    """One librados client for the benchmark's own housekeeping."""

    def __init__(self, conf, client_id, env):
        self.conf = conf
        self.client_id = client_id
        self.env = env
        self.cluster = connect(conf, client_id)
        self.ios = {}

    def shutdown(self):
        for io in self.ios.values():
            io.close()
        self.cluster.shutdown()

    def io(self, pool):
        if pool not in self.ios:
            self.ios[pool] = self.cluster.open_ioctx(pool)
        return self.ios[pool]

    def config_set(self, who, name, value):
        """`ceph config set WHO NAME VALUE` through the mon."""
        cmd = {"prefix": "config set", "who": who, "name": name, "value": str(value)}
        rc, _, err = self.cluster.mon_command(json.dumps(cmd), b"", timeout=30)
        if rc != 0:
            raise RuntimeError(f"config set {who} {name}: {err}")

    def rbd_cli(self, *args, timeout=1800):
        """Run the rbd CLI against the bed (CEPH_CONF is in env)."""
        out = subprocess.run(["rbd", "--id", self.client_id, *args], env=self.env,
                             stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"rbd {' '.join(args)}: {out.stderr.decode().strip()}")
        return out.stdout.decode()

    def exists(self, pool, name):
        try:
            with rbd.Image(self.io(pool), name, read_only=True):
                return True
        except rbd.ImageNotFound:
            return False

    def has_parent(self, pool, name):
        with rbd.Image(self.io(pool), name, read_only=True) as img:
            try:
                img.parent_info()
                return True
            except rbd.ImageNotFound:
                return False

    def remove_snap(self, pool, name, snap):
        """Unprotect (if protected) and remove one snapshot; False if absent."""
        try:
            with rbd.Image(self.io(pool), name) as img:
                if snap not in {s["name"] for s in img.list_snaps()}:
                    return False
                if img.is_protected_snap(snap):
                    img.unprotect_snap(snap)
                img.remove_snap(snap)
                return True
        except rbd.ImageNotFound:
            return False

    def remove_image(self, pool, name, wait=60.0):
        """Remove an image and its snapshots; False if it did not exist.
        Retries while the image is busy (a flatten still holding it)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                with rbd.Image(self.io(pool), name) as img:
                    for s in list(img.list_snaps()):
                        if img.is_protected_snap(s["name"]):
                            img.unprotect_snap(s["name"])
                        img.remove_snap(s["name"])
                rbd.RBD().remove(self.io(pool), name)
                return True
            except rbd.ImageNotFound:
                return False
            except (rbd.ImageBusy, rbd.ImageHasSnapshots):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def images(self, pool, prefix):
        return sorted(n for n in rbd.RBD().list(self.io(pool)) if n.startswith(prefix))

    def all_snaps(self, pool, name):
        """Every snapshot of an image, trash namespace included (CLI: --all)."""
        out = self.rbd_cli("snap", "ls", "--all", "--format", "json", f"{pool}/{name}")
        return json.loads(out or "[]")

    def fill(self, pool, name, size):
        """Grow an image to `size` bytes and write all of it (4 MiB, in order)."""
        with rbd.Image(self.io(pool), name) as img:
            img.resize(size)
        self.rbd_cli("bench", "--io-type", "write", "--io-size", "4M",
                     "--io-total", str(size), "--io-pattern", "seq", f"{pool}/{name}")

    def restore(self, pool, name, size):
        """Shrink through 0 (drops the data), back to the bed's size."""
        with rbd.Image(self.io(pool), name) as img:
            img.resize(0)
            img.resize(size)


def rados_bench(env, client_id, pool, secs):
    """`rados bench SECS write` (16 × 4 MiB in flight): MiB/s. It removes
    its objects afterwards."""
    out = subprocess.run(["rados", "--id", client_id, "-p", pool, "bench", str(secs), "write"],
                         env=env, stdin=subprocess.DEVNULL, capture_output=True,
                         timeout=secs + 600)
    text = out.stdout.decode()
    if out.returncode != 0:
        raise RuntimeError(f"rados bench: {out.stderr.decode().strip()[-500:]}")
    m = re.search(r"Bandwidth \(MB/sec\):\s+([0-9.]+)", text)
    if not m:
        raise RuntimeError(f"rados bench: no bandwidth in its output: {text[-500:]}")
    return float(m.group(1))
