"""rbdsnapd as the benchmark runs it: a config in the bed's directory, its
own socket and state directory, a pid file the wrapper's trap can kill by
id, and its resident memory read from /proc."""
import os
import subprocess
import time

from .rpc import Client


class Daemon:
    """One rbdsnapd process bound to one libvirt URI."""

    def __init__(self, binary, bed, name, libvirt_uri, env):
        self.binary = binary
        self.name = name
        self.uri = libvirt_uri
        self.env = env
        self.socket = os.path.join(bed, f"{name}.sock")
        self.config = os.path.join(bed, f"{name}.toml")
        self.log = os.path.join(bed, f"{name}.log")
        self.pidfile = os.path.join(bed, f"{name}.pid")
        self.state_dir = os.path.join(bed, f"{name}-state")
        self.proc = None

    def write_config(self):
        e = self.env
        with open(self.config, "w") as f:
            f.write(f'socket = "{self.socket}"\n'
                    f'state_dir = "{self.state_dir}"\n'
                    'log_format = "text"\n'
                    "[libvirt]\n"
                    f'uri = "{self.uri}"\n'
                    "[ceph]\n"
                    f'conf = "{e["RBDSNAPD_TEST_CEPH_CONF"]}"\n'
                    f'client_id = "{e["RBDSNAPD_TEST_CEPH_ID"]}"\n'
                    "[snapshot]\n"
                    f'default_pool = "{e["RBDSNAPD_TEST_POOL_IMAGES"]}"\n'
                    'quiesce = "required"\n')

    def start(self, timeout=60):
        self.write_config()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.binary, "--config", self.config],
                                         stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log)
        with open(self.pidfile, "w") as f:
            f.write(f"{self.proc.pid}\n")
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rbdsnapd ({self.name}) exited with "
                                   f"{self.proc.returncode}; see {self.log}")
            try:
                with Client(self.socket, timeout=10) as c:
                    status = c.call("daemon.status")
                if status["libvirt"]["connected"] and status["ceph"]["connected"]:
                    return status
                last = status
            except (OSError, ValueError) as exc:
                last = exc
            time.sleep(0.05)
        raise RuntimeError(f"rbdsnapd ({self.name}) not ready in {timeout} s: {last}")

    @property
    def pid(self):
        return self.proc.pid

    def client(self, timeout=3600.0):
        return Client(self.socket, timeout=timeout)

    def rss_kib(self):
        """VmRSS in KiB (0 if the process is gone)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace=40):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        try:
            os.unlink(self.pidfile)
        except FileNotFoundError:
            pass
