"""The systemd bed: a Debian 12 VM (QEMU/TCG) with systemd as PID 1.

The tests install the project's .deb in it and let systemd run the daemon,
sandbox and all, as on a compute node. The pieces:
- the root file system (dev/sysvm/build, cached) as the initramfs, plus a
  small cpio of this run's files laid over it (the .deb, ssh key, network,
  ceph.conf and the daemon user's keyring, the test-driver domains);
- a tap link between host and VM, host-only (no bridge, no forwarding);
- a Ceph cluster of its own on the host, bound to the host end of the link:
  a mon and an OSD inside a TCG VM would be slow to start and would share
  its one emulated CPU with the daemon under test, and the client side of
  librados/librbd is what runs in production on a compute node anyway;
- libvirtd inside the VM, started by systemd from its own units, serving
  the test driver's domains over its real socket (a QEMU guest nested in
  TCG would take minutes to boot); their disks are real images in the
  cluster, so snapshots are real;
- sshd inside the VM: the tests run systemctl, journalctl and the client
  there through one multiplexed ssh connection (ssh_config in the bed).
"""
import os
import shutil
import subprocess

from . import cluster as ceph_cluster
from . import procs, testdriver
from .procs import BedError

VM_NODE_XML = "/var/lib/rbdsnapd-test/test-node.xml"
VM_DEB = "/root/rbdsnapd.deb"
MEMORY_MIB = 3072


def link(port_base):
    """Tap name, host address and VM address for a port base."""
    net = (port_base // 100) % 250
    return f"rbdsnap{port_base}", f"10.213.{net}.1", f"10.213.{net}.2"


def build(repo):
    out = procs.run([os.path.join(repo, "dev/sysvm/build")], timeout=900).decode()
    found = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return found["kernel"], found["rootfs"], found["cmdline"]


def up(root, repo, port_base, deb, state):
    """Bring the VM and its cluster up; the env entries for the tests."""
    if not os.path.isfile(deb):
        raise BedError(f"no package at {deb} (cargo deb builds it)")
    kernel, rootfs, cmdline = build(repo)
    tap, host_ip, vm_ip = link(port_base)
    state.set("sysvm", {"tap": tap, "pids": {}})
    procs.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
    procs.run(["ip", "addr", "add", f"{host_ip}/24", "dev", tap])
    procs.run(["ip", "link", "set", tap, "up"])

    cluster = ceph_cluster.Cluster(os.path.join(root, "ceph"), port_base, addr=host_ip)
    os.makedirs(cluster.root, exist_ok=True)
    cluster.up(state)
    node_xml = testdriver.create(cluster.root, cluster)["RBDSNAPD_TEST_TESTDRV_URI"][len("test://"):]

    key = os.path.join(root, "id_ed25519")
    procs.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
    overlay = write_overlay(root, cluster, vm_ip, host_ip, key, deb, node_xml)
    initrd = os.path.join(root, "initrd.cpio")
    with open(initrd, "wb") as out:
        for part in (rootfs, overlay):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 20)

    serial = os.path.join(root, "serial.log")
    pid = procs.spawn([
        "qemu-system-x86_64", "-accel", "tcg", "-m", str(MEMORY_MIB), "-smp", "2",
        "-nographic", "-no-reboot", "-nodefaults",
        "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
        "-netdev", f"tap,id=n0,ifname={tap},script=no,downscript=no",
        "-device", "virtio-net-pci,netdev=n0",
        "-device", "virtio-rng-pci",
        "-serial", f"file:{serial}", "-monitor", "none",
    ], os.path.join(root, "qemu.out"))
    state.update("sysvm", lambda s: s["pids"].__setitem__("qemu", pid))
    ssh_config = write_ssh_config(root, vm_ip, key)

    def answers():
        if not procs.alive(pid):
            raise BedError("the VM stopped: " + procs.tail(serial))
        subprocess.run(["ssh", "-F", ssh_config, "vm", "true"], check=True,
                       capture_output=True, timeout=30)
        return True
    procs.wait_for("systemd VM (ssh)", answers, 240, interval=1.0)
    return {
        "RBDSNAPD_TEST_VM": root,
        "RBDSNAPD_TEST_VM_SSH_CONFIG": ssh_config,
        "RBDSNAPD_TEST_VM_DEB": VM_DEB,
        "RBDSNAPD_TEST_VM_DEB_HOST": os.path.abspath(deb),
        "RBDSNAPD_TEST_VM_LIBVIRT_URI": "test+unix://" + VM_NODE_XML,
        "RBDSNAPD_TEST_VM_CEPH_CONF": cluster.conf,
        "RBDSNAPD_TEST_VM_FSID": cluster.fsid,
        "RBDSNAPD_TEST_VM_CEPH_ID": ceph_cluster.DAEMON_USER,
    }


def write_overlay(root, cluster, vm_ip, host_ip, key, deb, node_xml):
    """This run's files, as a cpio laid over the cached root file system."""
    top = os.path.join(root, "overlay")

    def put(path, text_or_file, mode=0o644):
        dest = os.path.join(top, path.lstrip("/"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        if os.path.isfile(str(text_or_file)):
            shutil.copyfile(text_or_file, dest)
        else:
            with open(dest, "w") as f:
                f.write(text_or_file)
        os.chmod(dest, mode)

    put("/etc/systemd/network/10-rbdsnapd-vm.network",
        f"[Match]\nName=e*\n\n[Network]\nAddress={vm_ip}/24\nLinkLocalAddressing=no\n"
        "IPv6AcceptRA=no\n")
    with open(key + ".pub") as f:
        put("/root/.ssh/authorized_keys", f.read(), 0o600)
    os.chmod(os.path.join(top, "root/.ssh"), 0o700)
    # a compute node's client view of the cluster: mons, cephx, the daemon
    # user's keyring in the default place, nothing of the host's paths
    put("/etc/ceph/ceph.conf", "\n".join([
        "[global]",
        f"fsid = {cluster.fsid}",
        f"mon host = [v2:{host_ip}:{cluster.mon_v2},v1:{host_ip}:{cluster.mon_v1}]",
        "auth cluster required = cephx",
        "auth service required = cephx",
        "auth client required = cephx",
        "ms bind ipv6 = false",
        "",
    ]))
    user = ceph_cluster.DAEMON_USER
    put(f"/etc/ceph/ceph.client.{user}.keyring",
        os.path.join(cluster.root, f"ceph.client.{user}.keyring"), 0o600)
    put(VM_NODE_XML, node_xml)
    put(VM_DEB, deb)
    out = os.path.join(root, "overlay.cpio")
    files = subprocess.run(["find", "."], cwd=top, capture_output=True, check=True).stdout
    with open(out, "wb") as f:
        subprocess.run(["cpio", "-o", "-H", "newc", "-R", "0:0", "--quiet"], cwd=top,
                       input=files, stdout=f, check=True)
    return out


def write_ssh_config(root, vm_ip, key):
    path = os.path.join(root, "ssh_config")
    with open(path, "w") as f:
        f.write("\n".join([
            "Host vm",
            f"  HostName {vm_ip}",
            "  User root",
            f"  IdentityFile {key}",
            "  IdentitiesOnly yes",
            "  BatchMode yes",
            "  StrictHostKeyChecking no",
            "  UserKnownHostsFile /dev/null",
            "  LogLevel ERROR",
            "  ConnectTimeout 10",
            "  ServerAliveInterval 5",
            # one TCP connection and key exchange for every command
            "  ControlMaster auto",
            f"  ControlPath {root}/ssh-%C",
            "  ControlPersist 30m",
            "",
        ]))
    return path


def down(vstate, root):
    """Stop the VM, its cluster and the link; no-op for what never started."""
    if not vstate:
        return
    subprocess.run(["ssh", "-F", os.path.join(root, "ssh_config"), "-O", "exit", "vm"],
                   capture_output=True, timeout=10)
    pid = vstate.get("pids", {}).get("qemu")
    if pid:
        procs.stop(pid, "systemd VM", timeout=5)
    for stray in procs.pids_matching(os.path.join(root, "ssh-")):
        procs.stop(stray, "ssh master", timeout=5)
    tap = vstate.get("tap")
    if tap and os.path.exists(f"/sys/class/net/{tap}"):
        procs.run(["ip", "link", "del", tap])
