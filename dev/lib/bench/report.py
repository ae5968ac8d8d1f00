"""The written record: machine, versions and date, the issue-7 targets with
the measured ratio and PASS/MISS, every case's tables, and the plot of the
freeze-window distributions (matplotlib, Agg)."""
import datetime
import os
import subprocess
import sys

from .stats import ratio, summary, table

GIB = 1 << 30


def _cmd(argv):
    try:
        out = subprocess.run(argv, capture_output=True, timeout=30)
        return out.stdout.decode().strip().splitlines()[0] if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return None


def machine(repo):
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = meminfo()["MemTotal"]
    osname = "Linux"
    try:
        with open("/etc/os-release") as f:
            osname = next(line for line in f if line.startswith("PRETTY_NAME")) \
                .split("=", 1)[1].strip().strip('"')
    except (OSError, StopIteration):
        pass
    commit = _cmd(["git", "-C", repo, "rev-parse", "--short=12", "HEAD"]) or "unknown"
    dirty = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no",
                            "--", "src", "Cargo.toml", "Cargo.lock"],
                           capture_output=True).stdout.strip()
    ceph = _cmd(["ceph", "--version"]) or "unknown"
    return {
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "RAM": f"{mem_kib / (1 << 20):.1f} GiB",
        "OS": f"{osname}, kernel {os.uname().release}",
        "Ceph": " ".join(ceph.split()[:3] + ceph.split()[4:5]),
        "libvirt": _cmd(["libvirtd", "--version"]) or "unknown",
        "QEMU": _cmd(["qemu-system-x86_64", "--version"]) or "unknown",
        "rustc": _cmd(["rustc", "--version"]) or "unknown",
        "Python (peers)": sys.version.split()[0],
        "rbdsnapd": f"git {commit}" + (" with uncommitted changes in src/" if dirty else ""),
    }


def _med(values):
    return summary(values)["median"]


def _verdict(r, goal, at_most):
    if r is None:
        return "—"
    return "PASS" if (r <= goal if at_most else r >= goal) else "MISS"


def targets(b, results):
    """Rows: target, measured, goal, verdict."""
    by = {r.key: r for r in results}
    rows = []

    def add(what, r, goal, at_most=True, note=""):
        sign = "≤" if at_most else "≥"
        rows.append([what, "—" if r is None else f"{r:.3f}×" + note, f"{sign} {goal}×",
                     _verdict(r, goal, at_most)])

    fr = by.get("freeze")
    if fr and fr.data:
        fw = fr.data["freeze_ms"]
        add("freeze window median ÷ Python way", ratio(_med(fw["rbdsnapd"]), _med(fw["python"])),
            1.05)
        add("freeze window median ÷ command-line way",
            ratio(_med(fw["rbdsnapd"]), _med(fw["cli"])), 0.25)
    e2 = by.get("e2e")
    if e2 and e2.data and b.sizes:
        size = GIB if GIB in b.sizes else b.sizes[0]
        at = f"{size >> 30} GiB" if size % GIB == 0 else f"{size >> 20} MiB"
        d = e2.data
        own = _med(d.get(f"rbdsnapd@{size}", {}).get("outside", []))
        for way, goal, label in (("cli", 0.3, "command-line"), ("python", 0.9, "Python")):
            add(f"work outside the flatten at {at} ÷ {label} way",
                ratio(own, _med(d.get(f"{way}@{size}", {}).get("outside", []))), goal)
    fl = by.get("flatten")
    if fl and fl.data:
        bench = _med(fl.data["rados_bench_mibs"])
        for size in b.sizes:
            at = f"{size >> 30} GiB" if size % GIB == 0 else f"{size >> 20} MiB"
            own = _med(fl.data["flatten_mibs"].get(f"rbdsnapd@{size}", []))
            cli = _med(fl.data["flatten_mibs"].get(f"cli@{size}", []))
            add(f"flatten throughput at {at} ÷ `rbd flatten`", ratio(own, cli), 1.0, False)
            add(f"flatten throughput at {at} ÷ `rados bench` write", ratio(own, bench), 0.5,
                False)
    mo = by.get("modes")
    if mo and b.sizes:
        size = 4 * GIB if 4 * GIB in b.sizes else max(b.sizes)
        at = f"{size >> 30} GiB" if size % GIB == 0 else f"{size >> 20} MiB"
        bg = (mo.data or {}).get(f"background@{size}", {})
        sync = _med((e2.data if e2 else {}).get(f"rbdsnapd@{size}", {}).get("total", []))
        if bg.get("unavailable"):
            rows.append([f"background time to location at {at} ÷ sync", "not available",
                         "≤ 0.05×", "not available"])
        else:
            add(f"background time to location at {at} ÷ sync",
                ratio(_med(bg.get("location", [])), sync), 0.05)
    cc = by.get("concurrent")
    if cc and cc.data:
        n_err = len(cc.data["errors"])
        rows.append(["16 concurrent snapshots: errors", str(n_err), "0",
                     "PASS" if n_err == 0 and cc.data["total_s"] else "MISS"])
    dm = by.get("daemon")
    if dm and dm.data:
        idle = max(dm.data["rss_idle_kib"].values()) / 1024
        rows.append(["daemon resident memory idle (MiB)", f"{idle:.1f}", "≤ 50",
                     "PASS" if idle <= 50 else "MISS"])
    return rows


def markdown(b, results, target_rows, plot_path, out_path, started, took):
    m = machine(b.repo)
    cmd = "dev/bench " + " ".join(b.argv)
    parts = [
        "# Benchmarks: rbdsnapd beside its peers",
        f"Produced by `{cmd.strip()}` (issue 7) on {started:%Y-%m-%d %H:%M} UTC, in "
        f"{int(took // 60)} min {int(took % 60)} s. Each way ran {b.n} times per case, "
        "interleaved; "
        "median, p90 and max are over those runs. Ratios are rbdsnapd ÷ the peer "
        "(below 1 is rbdsnapd faster, or for throughput above 1). Re-run with "
        "`dev/bench --n 10 --sizes 1,4` (see the README).",
        "## Machine and versions",
        table(["", ""], [[k, v] for k, v in m.items()] +
              [["test bed", b.bed_description()],
               ["load average (1 min), RAM available: at start / end",
                " / ".join(f"{a:.2f}, {m:.1f} GiB" for a, m in b.load)]],
              align=["l", "l"]),
        "## Targets (issue 7)",
        table(["target", "measured", "goal", ""], target_rows),
    ]
    if plot_path:
        rel = os.path.relpath(plot_path, os.path.dirname(os.path.abspath(out_path)))
        parts.append(f"![freeze-window distributions of the three ways]({rel})")
    parts.append("## Results")
    text = "\n\n".join(parts) + "\n\n" + "\n".join(r.markdown() for r in results)
    return text


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fr = next((r for r in results if r.key == "freeze"), None)
    if fr is None or not fr.data:
        raise RuntimeError("no freeze-window data to plot")
    ways = [w for w in ("rbdsnapd", "python", "cli") if fr.data["freeze_ms"][w]]
    names = {"rbdsnapd": "rbdsnapd", "python": "Python\n(libvirt + rbd)",
             "cli": "command line\n(virsh + rbd)"}
    colors = {"rbdsnapd": "tab:blue", "python": "tab:orange", "cli": "tab:green"}
    data = [fr.data["freeze_ms"][w] for w in ways]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    ax1.boxplot(data, labels=[names[w] for w in ways], showfliers=False,
                medianprops={"color": "black"})
    for k, (w, values) in enumerate(zip(ways, data), start=1):
        n = len(values)
        xs = [k + (0.18 * ((i / max(n - 1, 1)) - 0.5)) for i in range(n)]
        ax1.scatter(xs, values, s=12, alpha=0.6, color=colors[w])
    ax1.set_ylabel("freeze window (ms)")
    ax1.set_ylim(bottom=0)
    ax1.set_title("guest frozen → thawed, one snapshot")
    for w, values in zip(ways, data):
        xs = sorted(values)
        ax2.step([xs[0]] + xs, [0] + [(i + 1) / len(xs) for i in range(len(xs))],
                 where="post", color=colors[w], label=names[w].replace("\n", " "))
    ax2.set_xlabel("freeze window (ms)")
    ax2.set_ylabel("fraction of runs ≤ x")
    ax2.set_xlim(left=0)
    ax2.set_ylim(0, 1.05)
    ax2.set_title("cumulative distribution")
    ax2.legend(loc="best", fontsize="small")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def meminfo():
    with open("/proc/meminfo") as f:
        return {line.split(":")[0]: int(line.split()[1]) for line in f}


def load():
    """(1-minute load average, GiB of memory available): other work on the
    machine shows here."""
    with open("/proc/loadavg") as f:
        avg = float(f.read().split()[0])
    return avg, meminfo().get("MemAvailable", 0) / (1 << 20)


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc)
