"""The tiny real guest: booted by libvirtd under TCG from an RBD disk.

Its disk is laid out the way Nova lays out an instance: an ext4 base image
`images/guest-base@snap` (the "Glance image"), cloned into `vms` as the
instance disk. libvirt reaches the cluster with a ceph secret; QEMU talks
msgr v1 to the mon. The guest runs qemu-ga with a steerable fsfreeze hook
(dev/guest/fsfreeze-hook), and the bed waits until the agent answers.
"""
import base64
import os
import tempfile
import uuid

from . import libvirtd, procs
from .procs import BedError

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
DISK_SIZE = 256 << 20
# Raw data disks besides the boot disk, for snapshots of several disks at one
# instant (multi-disk tests and benchmarks); the guest writes them directly.
DATA_TARGETS = ("vdb", "vdc", "vdd", "vde", "vdf", "vdg", "vdh", "vdi")
DATA_SIZE = 8 << 20
BASE = ("images", "guest-base", "snap")
CHUNK = 4 << 20


def build_image():
    """Kernel, initramfs and cmdline from dev/guest/build (cached there)."""
    out = procs.run([os.path.join(REPO, "dev", "guest", "build")], timeout=900)
    paths = dict(line.split("=", 1) for line in out.decode().splitlines() if "=" in line)
    return paths["kernel"], paths["initramfs"], paths["cmdline"]


def make_disk(root, cluster, disk_name):
    """ext4 base image in `images`, cloned into `vms` as the guest's disk."""
    import rados
    import rbd
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        raw = os.path.join(tmp, "disk.img")
        with open(raw, "wb") as f:
            f.truncate(DISK_SIZE)
        procs.run(["mkfs.ext4", "-q", "-F", "-L", "rbdsnapd", raw])
        client = rados.Rados(conffile=cluster.conf, name="client.admin")
        client.connect(timeout=10)
        try:
            with client.open_ioctx(BASE[0]) as base_io, client.open_ioctx("vms") as vms:
                rbd.RBD().create(base_io, BASE[1], DISK_SIZE)
                with rbd.Image(base_io, BASE[1]) as img, open(raw, "rb") as f:
                    offset = 0
                    while chunk := f.read(CHUNK):
                        if chunk.count(0) != len(chunk):  # keep it sparse
                            img.write(chunk, offset)
                        offset += len(chunk)
                    img.create_snap(BASE[2])
                    img.protect_snap(BASE[2])
                rbd.RBD().clone(base_io, BASE[1], BASE[2], vms, disk_name)
                for target in DATA_TARGETS:
                    rbd.RBD().create(vms, data_disk(disk_name, target), DATA_SIZE)
        finally:
            client.shutdown()


def data_disk(disk_name, target):
    """The image of data disk `target` (in `vms`)."""
    return f"{disk_name}-{target}"


def disk_xml(cluster, image, secret, target, boot=""):
    return f"""<disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='writeback'/>
      <source protocol='rbd' name='{image}'>
        <host name='127.0.0.1' port='{cluster.mon_v1}'/>
      </source>
      <auth username='admin'><secret type='ceph' uuid='{secret}'/></auth>
      <target dev='{target}' bus='virtio'/>{boot}
    </disk>"""


def admin_key(cluster):
    with open(cluster.admin_keyring) as f:
        for line in f:
            if line.strip().startswith("key ="):
                return line.split("=", 1)[1].strip()
    raise BedError("no client.admin key in " + cluster.admin_keyring)


def secret_uuid(cluster):
    """The UUID of the bed's ceph secret (the same on a migration target)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "rbdsnapd-testbed/" + cluster.fsid))


def secret_xml(secret, fsid):
    return f"""<secret ephemeral='no' private='no'>
  <uuid>{secret}</uuid>
  <usage type='ceph'><name>client.admin rbdsnapd test bed {fsid}</name></usage>
</secret>"""


def domain_xml(name, dom_uuid, kernel, initrd, cmdline, cluster, image, secret, console):
    disks = "\n    ".join(
        [disk_xml(cluster, image, secret, "vda", "\n      <boot order='1'/>")]
        + [disk_xml(cluster, data_disk(image, t), secret, t) for t in DATA_TARGETS])
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <uuid>{dom_uuid}</uuid>
  <memory unit='MiB'>192</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <!-- a test bed VM: run QEMU as root without relabelling the shared cache -->
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    {disks}
    <controller type='virtio-serial' index='0'/>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <!-- append: QEMU reopens the file on the host a migration lands on -->
    <serial type='file'>
      <source path='{console}' append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>"""


def boot(root, cluster, state):
    """Build (or reuse) the guest, define it in libvirtd, boot, wait for qemu-ga."""
    import libvirt
    import libvirt_qemu
    kernel, initrd, cmdline = build_image()
    name = f"rbdsnapd-guest-{cluster.port_base}"
    disk_name = f"guest-{cluster.port_base}-disk"
    make_disk(root, cluster, disk_name)
    secret = secret_uuid(cluster)
    dom_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, "rbdsnapd-testbed/guest/" + name))
    console = os.path.join(root, "guest-console.log")
    record = {"domain": name, "secret": secret, "console": console}
    state.set("guest", record)

    conn = libvirt.open(libvirtd.URI)
    try:
        stale_cleanup(conn, name)
        sec = conn.secretDefineXML(secret_xml(secret, cluster.fsid))
        sec.setValue(base64.b64decode(admin_key(cluster)))
        dom = conn.defineXML(domain_xml(name, dom_uuid, kernel, initrd, cmdline,
                                        cluster, f"vms/{disk_name}", secret, console))
        dom.create()

        def agent_ping():
            libvirt_qemu.qemuAgentCommand(dom, '{"execute":"guest-ping"}', 5, 0)
            return True
        try:
            procs.wait_for("guest agent", agent_ping, 300, interval=0.5)
        except BedError as exc:
            raise BedError(f"{exc}\n--- guest console ---\n{procs.tail(console)}")
    finally:
        conn.close()
    return {
        "RBDSNAPD_TEST_GUEST": name,
        "RBDSNAPD_TEST_GUEST_UUID": dom_uuid,
        "RBDSNAPD_TEST_GUEST_IMAGE": f"vms/{disk_name}",
        # target:pool/image of each raw data disk, comma-separated
        "RBDSNAPD_TEST_GUEST_DATA_DISKS": ",".join(
            f"{t}:vms/{data_disk(disk_name, t)}" for t in DATA_TARGETS),
        "RBDSNAPD_TEST_GUEST_BASE": "{}/{}@{}".format(*BASE),
        "RBDSNAPD_TEST_GUEST_MOUNT": "/mnt",
        "RBDSNAPD_TEST_GUEST_CONSOLE": console,
        "RBDSNAPD_TEST_LIBVIRT_SECRET": secret,
    }


def stale_cleanup(conn, name):
    """A bed killed before `down` may have left its domain defined."""
    import libvirt
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return
    if dom.isActive():
        dom.destroy()
    dom.undefine()


def down(record):
    if not record:
        return
    import libvirt
    libvirt.registerErrorHandler(lambda *_: None, None)
    if not libvirtd.answers(libvirtd.LIBVIRT_SOCK):
        return
    conn = libvirt.open(libvirtd.URI)
    try:
        stale_cleanup(conn, record["domain"])
        try:
            conn.secretLookupByUUIDString(record["secret"]).undefine()
        except libvirt.libvirtError:
            pass
    finally:
        conn.close()
