"""`dev/testbed health`: what a failed run needs to know about its bed —
which of the bed's processes still run (and how big), what Ceph says of
itself, the memory left and the kernel's OOM kills, and the end of each
Ceph daemon's log. Read-only; every probe is bounded, so a hung bed
still gets its report."""
import os
import subprocess

from . import procs
from .state import State


# the bed's daemons by the name its state records them under; their ids
# (mon.a, mgr.x) are the bed's
LOGS = {"mon": "mon.a.log", "mgr": "mgr.x.log"}


def _run(argv, timeout=15):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return (out.stdout + out.stderr).strip() or f"(exit {out.returncode}, no output)"
    except subprocess.TimeoutExpired:
        return f"(no answer within {timeout} s)"
    except OSError as exc:
        return f"({exc})"


def _rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def report(root):
    """The report, as text, for the bed in ROOT."""
    root = os.path.abspath(root)
    state = State(root)
    cluster = state.get("cluster") or {}
    lines = [f"== bed {root}"]
    for name, pid in sorted((cluster.get("pids") or {}).items()):
        alive = procs.alive(pid)
        size = f", {_rss_mib(pid)} MiB resident" if alive else ""
        lines.append(f"{name} (pid {pid}): {'running' if alive else 'GONE'}{size}")
    conf = cluster.get("conf")
    if conf:
        lines.append("== ceph health detail")
        lines.append(_run(["ceph", "-c", conf, "--connect-timeout", "10", "health", "detail"]))
        lines.append("== ceph osd stat")
        lines.append(_run(["ceph", "-c", conf, "--connect-timeout", "10", "osd", "stat"]))
    lines.append("== memory")
    lines.append(_run(["free", "-m"]))
    kills = [l for l in _run(["dmesg"]).splitlines() if "Out of memory" in l or "oom-kill" in l]
    lines.append("== OOM kills: " + ("\n".join(kills[-5:]) if kills else "none"))
    for name in sorted(cluster.get("pids") or {}):
        log = LOGS.get(name, f"{name}.log")
        lines.append(f"== {log} (last 15 lines)")
        lines.append(procs.tail(os.path.join(root, "log", log), 15).rstrip())
    return "\n".join(lines)
