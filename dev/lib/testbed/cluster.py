"""A throwaway single-host Ceph cluster: one mon, one OSD, optionally a mgr.

Bound to 127.0.0.1 (or a host-only address given, such as the systemd VM's
tap link) on ports derived from a base port, with every path (data,
run dir, admin sockets, logs) under the cluster's own directory, so that two
clusters can run side by side and nothing touches /etc/ceph or a real cluster.
cephx is on. Bootstrap (OSD registration, pools, rbd init) goes through one
librados client instead of a dozen `ceph` CLI calls (each costs ~0.5 s).
"""
import base64
import json
import os
import socket
import struct
import time
import uuid

from . import procs
from .procs import BedError

POOLS = ("vms", "images")
# The cephx user rbdsnapd runs as on every bed (tests, demo, benchmark), with
# the caps OpenStack services usually get; admin only sets the bed up and
# checks what the daemon left. The README's "Ceph user" section lists the
# same caps.
DAEMON_USER = "rbdsnapd"
DAEMON_CAPS = {
    "mon": "profile rbd",
    "osd": ", ".join(f"profile rbd pool={p}" for p in POOLS),
    "mgr": ", ".join(f"profile rbd pool={p}" for p in POOLS),
}
MON_ID = "a"
MGR_ID = "x"


def gen_key():
    """A cephx secret: type 1 (AES), creation time, 16 random bytes."""
    now = time.time()
    blob = struct.pack("<HIIH", 1, int(now), 0, 16) + os.urandom(16)
    return base64.b64encode(blob).decode()


def keyring_entry(name, key, caps):
    lines = [f"[{name}]", f"\tkey = {key}"]
    lines += [f'\tcaps {svc} = "{cap}"' for svc, cap in caps.items()]
    return "\n".join(lines) + "\n"



def osd_env():
    """The OSD's environment. Memstore keeps every object in the OSD's heap,
    and glibc's adaptive mmap threshold moves a flatten's large buffers
    into heap arenas after the first frees, where they stay once the images
    are gone (measured: 11.5 GiB resident during flatten_modes, 4.8 GiB
    still held after it). A fixed threshold keeps large buffers in their
    own mappings, given back when freed."""
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}

class Cluster:
    """One throwaway cluster living in `root`, ports from `port_base` up."""

    def __init__(self, root, port_base, store="memstore", addr="127.0.0.1"):
        if store not in ("memstore", "bluestore"):
            raise BedError(f"unknown object store {store!r}")
        self.root = os.path.abspath(root)
        self.port_base = port_base
        self.store = store
        self.addr = addr
        self.conf = os.path.join(self.root, "ceph.conf")
        self.admin_keyring = os.path.join(self.root, "ceph.client.admin.keyring")
        self.mon_v2 = port_base
        self.mon_v1 = port_base + 1
        self.fsid = None

    # -- configuration -----------------------------------------------------

    def write_conf(self):
        r = self.root
        store_opts = {
            "memstore": ["memstore device bytes = 34359738368"],
            "bluestore": [
                # not $osd_data/block: mkfs would make a self-referencing link
                f"bluestore block path = {r}/osd.$id.block",
                "bluestore block create = true",
                "bluestore block size = 64424509440",
                "bluestore fsck on mkfs = false",
                "bluestore cache size = 268435456",
            ],
        }[self.store]
        lines = [
            "[global]",
            f"fsid = {self.fsid}",
            f"mon host = [v2:{self.addr}:{self.mon_v2},v1:{self.addr}:{self.mon_v1}]",
            f"public addr = {self.addr}",
            f"cluster addr = {self.addr}",
            "ms bind ipv6 = false",
            f"ms bind port min = {self.port_base + 2}",
            # the block's last port is the migration target's (migration.py)
            f"ms bind port max = {self.port_base + 48}",
            "auth cluster required = cephx",
            "auth service required = cephx",
            "auth client required = cephx",
            # one keyring per user: ceph.client.admin.keyring and the
            # daemon's ceph.client.rbdsnapd.keyring
            f"keyring = {r}/ceph.$name.keyring",
            f"run dir = {r}/run",
            f"admin socket = {r}/run/$name.asok",
            f"pid file = {r}/run/$name.pid",
            f"log file = {r}/log/$name.log",
            f"crash dir = {r}/crash",
            f"exporter sock dir = {r}/run",
            "log to stderr = false",
            "err to stderr = true",
            # neither store looks like an SSD to Ceph, which then sleeps 5 s
            # between trims of deleted snapshots: freed space stays held
            # (memstore: in RAM, until the OOM killer takes the OSD) and
            # client ops time out behind the trim queue
            "osd snap trim sleep hdd = 0",
            "osd snap trim sleep hybrid = 0",
            # the hang tests SIGSTOP the OSD for 10 s, on a machine whose two
            # cores also run TCG guests: an op caught mid-way must not trip
            # the OSD's own thread timeout (15 s by default), whose health
            # effects outlive the test
            "osd op thread timeout = 60",
            "osd pool default size = 1",
            "osd pool default min size = 1",
            "osd crush chooseleaf type = 0",
            "osd pool default pg autoscale mode = off",
            "mon allow pool size one = true",
            "mon allow pool delete = true",
            "mon warn on pool no redundancy = false",
            "mon warn on insecure global id reclaim allowed = false",
            # clone v2 (no protect needed) requires mimic or newer clients
            "mon osd initial require min compat client = mimic",
            "rbd default clone format = 2",
            # the default 1 s paxos commit makes bring-up ~10x slower
            "paxos propose interval = 0.01",
            # no mgr by default: keep health from complaining about it
            "mon mgr mkfs grace = 31536000",
            "mon data avail crit = 0",
            "mon data avail warn = 0",
            "",
            "[mon]",
            f"mon data = {r}/mon.$id",
            "",
            "[osd]",
            f"osd data = {r}/osd.$id",
            f"keyring = {r}/osd.$id/keyring",
            f"osd objectstore = {self.store}",
            *store_opts,
            "",
            "[mgr]",
            f"mgr data = {r}/mgr.$id",
            f"keyring = {r}/mgr.$id/keyring",
            "",
            "[client]",
            # one admin socket per client process: the daemon, the CLI and
            # the tests would otherwise fight over client.admin.asok
            f"admin socket = {r}/run/$name.$pid.asok",
            # a one-OSD cluster never marks a killed OSD down: without these,
            # client calls would hang forever on a dead OSD or mon
            "rados osd op timeout = 10",
            "rados mon op timeout = 10",
            "client mount timeout = 10",
            "",
        ]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines))

    # -- bring-up ----------------------------------------------------------

    def check_ports_free(self):
        """Fail early and clearly instead of a mon that cannot bind.

        SO_REUSEADDR as the daemons use it: only a listener is a conflict,
        not a connection of an earlier bed lingering in TIME_WAIT.
        """
        for port in range(self.port_base, self.port_base + 50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((self.addr, port))
                except OSError:
                    raise BedError(f"port {port} on {self.addr} is in use: pick another "
                                   f"--port-base (the cluster uses {self.port_base}.."
                                   f"{self.port_base + 49})")

    def up(self, state):
        """Create and start the cluster; record pids in state as they appear."""
        self.check_ports_free()
        for sub in ("run", "log", "crash"):
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        self.fsid = str(uuid.uuid4())
        state.set("cluster", {"root": self.root, "fsid": self.fsid,
                              "conf": self.conf, "port_base": self.port_base,
                              "store": self.store, "pids": {}})
        self.write_conf()
        self._mkfs_mon()
        self._start("mon", ["ceph-mon", "-f", "-c", self.conf, "-i", MON_ID], state)
        rados = self._connect()
        try:
            self._add_osd(rados, state)
            self._create_pools(rados)
            self._create_daemon_user(rados)
        finally:
            rados.shutdown()

    def _mkfs_mon(self):
        admin_key = gen_key()
        with open(self.admin_keyring, "w") as f:
            f.write(keyring_entry("client.admin", admin_key, {
                "mon": "allow *", "osd": "allow *", "mds": "allow *", "mgr": "allow *"}))
        # the mon's keyring must live outside its data dir (mkfs wants it empty)
        mon_keyring = os.path.join(self.root, "mon.keyring")
        with open(mon_keyring, "w") as f:
            f.write(keyring_entry("mon.", gen_key(), {"mon": "allow *"}))
            f.write(keyring_entry("client.admin", admin_key, {
                "mon": "allow *", "osd": "allow *", "mds": "allow *", "mgr": "allow *"}))
        monmap = os.path.join(self.root, "monmap")
        procs.run(["monmaptool", "--create", "--clobber", "--fsid", self.fsid,
                   "--addv", MON_ID,
                   f"[v2:{self.addr}:{self.mon_v2},v1:{self.addr}:{self.mon_v1}]",
                   monmap])
        procs.run(["ceph-mon", "-c", self.conf, "--mkfs", "-i", MON_ID,
                   "--monmap", monmap, "--keyring", mon_keyring])

    def _start(self, name, argv, state, env=None):
        log = os.path.join(self.root, "log", f"{name}.stdout")
        pid = procs.spawn(argv, log, env=env)
        state.update("cluster", lambda c: c["pids"].__setitem__(name, pid))
        return pid

    def _connect(self, timeout=30):
        import rados  # Debian's python3-rados; only needed while bootstrapping
        def attempt():
            client = rados.Rados(conffile=self.conf, name="client.admin")
            try:
                client.connect(timeout=5)
            except Exception:
                client.shutdown()
                raise
            return client
        return procs.wait_for("ceph-mon", attempt, timeout)

    def mon_command(self, rados, cmd, inbuf=b""):
        ret, out, err = rados.mon_command(json.dumps(cmd), inbuf, timeout=30)
        if ret != 0:
            raise BedError(f"mon command {cmd['prefix']} failed ({ret}): {err}")
        return out

    def _add_osd(self, rados, state):
        osd_uuid = str(uuid.uuid4())
        key = gen_key()
        out = self.mon_command(rados, {"prefix": "osd new", "uuid": osd_uuid,
                                       "format": "json"},
                               json.dumps({"cephx_secret": key}).encode())
        osd_id = json.loads(out)["osdid"]
        data = os.path.join(self.root, f"osd.{osd_id}")
        os.makedirs(data, exist_ok=True)
        with open(os.path.join(data, "keyring"), "w") as f:
            f.write(keyring_entry(f"osd.{osd_id}", key, {}))
        procs.run(["ceph-osd", "-c", self.conf, "-i", str(osd_id), "--mkfs",
                   "--osd-uuid", osd_uuid], timeout=120)
        self._start(f"osd.{osd_id}",
                    ["ceph-osd", "-f", "-c", self.conf, "-i", str(osd_id)], state,
                    env=osd_env())

        def osd_up():
            dump = json.loads(self.mon_command(rados, {"prefix": "osd dump",
                                                       "format": "json"}))
            return any(o["osd"] == osd_id and o["up"] for o in dump["osds"])
        procs.wait_for(f"osd.{osd_id} up", osd_up, 60)

    def _create_pools(self, rados):
        import rbd
        for pool in POOLS:
            self.mon_command(rados, {"prefix": "osd pool create", "pool": pool,
                                     "pg_num": 16, "pgp_num": 16})
            self.mon_command(rados, {"prefix": "osd pool application enable",
                                     "pool": pool, "app": "rbd"})
        for pool in POOLS:
            def writable():
                with rados.open_ioctx(pool) as ioctx:
                    ioctx.write_full("rbdsnapd-testbed-probe", b"ok")
                    ioctx.remove_object("rbdsnapd-testbed-probe")
                return True
            procs.wait_for(f"pool {pool} writable", writable, 60)
            with rados.open_ioctx(pool) as ioctx:
                rbd.RBD().pool_init(ioctx, False)

    def _create_daemon_user(self, rados):
        caps = [x for svc, cap in DAEMON_CAPS.items() for x in (svc, cap)]
        key = json.loads(self.mon_command(rados, {
            "prefix": "auth get-or-create-key", "entity": f"client.{DAEMON_USER}",
            "caps": caps, "format": "json"}))["key"]
        path = os.path.join(self.root, f"ceph.client.{DAEMON_USER}.keyring")
        with open(path, "w") as f:
            f.write(keyring_entry(f"client.{DAEMON_USER}", key, {}))

    def start_mgr(self, state, timeout=60):
        """Add a mgr (needed only for mgr-side features such as rbd tasks)."""
        rados = self._connect()
        try:
            key = json.loads(self.mon_command(rados, {
                "prefix": "auth get-or-create-key", "entity": f"mgr.{MGR_ID}",
                "caps": ["mon", "allow profile mgr", "osd", "allow *", "mds", "allow *"],
                "format": "json"}))["key"]
            data = os.path.join(self.root, f"mgr.{MGR_ID}")
            os.makedirs(data, exist_ok=True)
            with open(os.path.join(data, "keyring"), "w") as f:
                f.write(keyring_entry(f"mgr.{MGR_ID}", key, {}))
            self._start("mgr", ["ceph-mgr", "-f", "-c", self.conf, "-i", MGR_ID], state)

            def mgr_active():
                dump = json.loads(self.mon_command(rados, {"prefix": "mgr dump",
                                                           "format": "json"}))
                return dump.get("available") and "rbd_support" in dump.get("modules", []) + dump.get("always_on_modules", {}).get("pacific", [])
            procs.wait_for("ceph-mgr active", mgr_active, timeout, interval=0.2)
        finally:
            rados.shutdown()


def down(cstate):
    """Stop every daemon of the cluster recorded in cstate, then any stray."""
    if not cstate:
        return
    pids = cstate.get("pids", {})
    # mgr and osd first: a mon stopped first leaves them retrying for a while
    for name in sorted(pids, key=lambda n: n.startswith("mon")):
        procs.stop(pids[name], name)
    for pid in procs.pids_matching(f"-c {cstate['conf']}"):
        procs.stop(pid, f"stray ceph daemon {pid}")
