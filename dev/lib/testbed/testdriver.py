"""Domains for libvirt's in-process test driver, with disks on the bed's RBD.

The test driver (test:///abs/path/node.xml) needs no daemon and answers in
under a millisecond: socket-level tests use it for lookups, disk discovery and
FSFreeze/FSThaw bookkeeping. Its domains' RBD images really exist in the bed's
cluster, so a snapshot workflow driven against it does real Ceph work.
"""
import os
import uuid
from xml.sax.saxutils import quoteattr

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
RUNNING_DOMAINS = 16
IMAGE_SIZE = 16 << 20


def disk_xml(cluster, dev, image, boot=None, secret="00000000-0000-0000-0000-000000000000"):
    # the monitor as the daemon's host reaches it (the systemd VM: the host
    # end of its link): the daemon refuses disks naming another cluster
    boot_el = f"<boot order='{boot}'/>" if boot else ""
    return f"""
      <disk type='network' device='disk'>
        <driver name='qemu' type='raw' cache='writeback'/>
        <source protocol='rbd' name={quoteattr(image)}>
          <host name='{cluster.addr}' port='{cluster.mon_v1}'/>
        </source>
        <auth username='admin'><secret type='ceph' uuid='{secret}'/></auth>
        <target dev='{dev}' bus='virtio'/>{boot_el}
      </disk>"""


def domain_xml(name, disks, runstate=None):
    state = f"<test:runstate>{runstate}</test:runstate>" if runstate else ""
    return f"""
  <domain type='test' xmlns:test='{TEST_NS}'>
    <name>{name}</name>
    <uuid>{uuid.uuid5(uuid.NAMESPACE_URL, 'rbdsnapd-test/' + name)}</uuid>
    <memory unit='MiB'>128</memory>
    <vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>{''.join(disks)}
      <channel type='unix'>
        <target type='virtio' name='org.qemu.guest_agent.0'/>
      </channel>
    </devices>{state}
  </domain>"""


def create(root, cluster):
    """Write root/test-node.xml and create the RBD images its disks use."""
    import rados
    import rbd
    images = []
    domains = []
    for n in range(1, RUNNING_DOMAINS + 1):
        name = f"rbdsnapd-test-{n:02d}"
        vda = f"vms/testdrv-{n:02d}-vda"
        disks = [disk_xml(cluster, "vda", vda, boot=1)]
        images.append(vda)
        if n == 1:  # a second RBD disk: one freeze for several disks
            disks.append(disk_xml(cluster, "vdb", "vms/testdrv-01-vdb"))
            images.append("vms/testdrv-01-vdb")
        domains.append(domain_xml(name, disks))
    # a disk that is not RBD: pre-flight must refuse it
    domains.append(domain_xml("rbdsnapd-test-file", ["""
      <disk type='file' device='disk'>
        <driver name='qemu' type='raw'/>
        <source file='/var/lib/rbdsnapd-test/file-disk.img'/>
        <target dev='vda' bus='virtio'/>
      </disk>"""]))
    # a domain that is not running
    domains.append(domain_xml("rbdsnapd-test-off",
                              [disk_xml(cluster, "vda", "vms/testdrv-off-vda", boot=1)],
                              runstate=5))
    images.append("vms/testdrv-off-vda")
    # a disk cloned from a base image in `images`: Nova's destination rule
    domains.append(domain_xml("rbdsnapd-test-child",
                              [disk_xml(cluster, "vda", "vms/testdrv-child-vda", boot=1)]))

    client = rados.Rados(conffile=cluster.conf, name="client.admin")
    client.connect(timeout=10)
    try:
        with client.open_ioctx("vms") as vms, client.open_ioctx("images") as imgs:
            for spec in images:
                rbd.RBD().create(vms, spec.split("/", 1)[1], IMAGE_SIZE)
            rbd.RBD().create(imgs, "testdrv-base", IMAGE_SIZE)
            with rbd.Image(imgs, "testdrv-base") as base:
                base.write(b"rbdsnapd base image\n", 0)
                base.create_snap("snap")
                base.protect_snap("snap")
            rbd.RBD().clone(imgs, "testdrv-base", "snap", vms, "testdrv-child-vda")
    finally:
        client.shutdown()

    path = os.path.join(root, "test-node.xml")
    with open(path, "w") as f:
        f.write("<node>" + "".join(domains) + "\n</node>\n")
    return {"RBDSNAPD_TEST_TESTDRV_URI": "test://" + path}
