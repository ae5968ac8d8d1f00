"""The written record: machine, versions and date, the targets (issues 7
and 14) with the measured ratio and PASS/MISS, every case's tables, and the
plots of the freeze-window distributions and of the multi-disk windows
(matplotlib, Agg). A run of only some cases merges its sections into the
existing report instead (`merge`)."""
import datetime
import os
import re
import subprocess
import sys

from . import multidisk
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
    md = by.get("multidisk")
    if md and md.data:
        for what, r, goal in multidisk.targets(md):
            add(what, r, goal)
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
        f"Produced by `{cmd.strip()}` (issues 7, 14) on {started:%Y-%m-%d %H:%M} UTC, in "
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
        TARGETS_HEADING,
        table(TARGET_HEADERS, target_rows),
    ]
    if plot_path:
        rel = os.path.relpath(plot_path, os.path.dirname(os.path.abspath(out_path)))
        parts.append(f"![freeze-window distributions of the three ways]({rel})")
    parts.append("## Results")
    text = "\n\n".join(parts) + "\n\n" + "\n".join(r.markdown() for r in results)
    return text


TARGETS_HEADING = "## Targets (issues 7, 14)"
TARGET_HEADERS = ["target", "measured", "goal", ""]


def merge(old, results, target_rows):
    """The report `old` with these results in it: each result's section
    replaces the one with its number (or goes before Housekeeping), each
    target row replaces the one with its name (or is added); everything
    else — the other cases' sections, the header, machine and versions of
    their run — stays as it was."""
    chunks = re.split(r"(?m)^(?=#{2,3} )", old)
    for r in results:
        new = r.markdown() + "\n"
        number = r.title.split()[0]
        at = next((k for k, c in enumerate(chunks)
                   if c.startswith(f"### {number} ")), None)
        if at is not None:
            chunks[at] = new
            continue
        at = next((k for k, c in enumerate(chunks) if c.startswith("### Housekeeping")),
                  len(chunks))
        if at == len(chunks) and chunks and not chunks[-1].endswith("\n\n"):
            chunks[-1] = chunks[-1].rstrip("\n") + "\n\n"
        chunks.insert(at, new)
    at = next((k for k, c in enumerate(chunks) if c.startswith("## Targets")), None)
    if at is None:
        raise RuntimeError("the report to merge into has no Targets section")
    chunks[at] = _merge_targets(chunks[at], target_rows)
    return "".join(chunks).rstrip("\n") + "\n"


def _merge_targets(chunk, target_rows):
    lines = chunk.split("\n")
    rows_at = [k for k, line in enumerate(lines) if line.startswith("|")]
    rows = [[c.strip() for c in lines[k].strip().strip("|").split("|")] for k in rows_at[2:]]
    for new in target_rows:
        same = next((row for row in rows if row[0] == new[0]), None)
        if same is None:
            rows.append([str(c) for c in new])
        else:
            same[:] = [str(c) for c in new]
    body = table(TARGET_HEADERS, rows)
    if rows_at:
        lines[rows_at[0]:rows_at[-1] + 1] = [body]
    else:
        lines[1:1] = ["", body]
    lines[0] = TARGETS_HEADING
    return "\n".join(lines)


def provenance(b, started, took):
    """The note a merged section carries: which run measured it."""
    m = machine(b.repo)
    cmd = ("dev/bench " + " ".join(b.argv)).strip()
    return (f"Measured by `{cmd}` on {started:%Y-%m-%d %H:%M} UTC, in {int(took // 60)} min "
            f"{int(took % 60)} s — a run of its own, not the one the header describes; "
            f"rbdsnapd {m['rbdsnapd']}, the machine and versions above; "
            "load average (1 min), RAM available at start / "
            "end: " + " / ".join(f"{a:.2f}, {r:.1f} GiB" for a, r in b.load) + ".")


def plot_multidisk(result, path):
    """Freeze window against the number of disks, one panel per mon
    setting: every run as a dot, the medians joined."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = result.data
    if not d:
        raise RuntimeError("no multi-disk data to plot")
    colors = {"rbdsnapd": "tab:blue", "python": "tab:orange"}
    names = {"rbdsnapd": "rbdsnapd (concurrent)", "python": "Python (one after another)"}
    intervals = d["intervals_s"]
    fig, axes = plt.subplots(1, len(intervals), figsize=(5 * len(intervals), 4.2),
                             squeeze=False)
    for ax, secs in zip(axes[0], intervals):
        for way, shift in (("rbdsnapd", -0.06), ("python", 0.06)):
            runs = d["window_ms"][f"{secs:g}"][way]
            counts = [n for n in d["counts"] if runs.get(str(n))]
            for n in counts:
                ax.scatter([n * (1 + shift)] * len(runs[str(n)]), runs[str(n)], s=10,
                           alpha=0.4, color=colors[way])
            ax.plot(counts, [_med(runs[str(n)]) for n in counts], marker="o",
                    color=colors[way], label=names[way])
        ax.set_xscale("log", base=2)
        ax.set_xticks(d["counts"])
        ax.set_xticklabels([str(n) for n in d["counts"]])
        ax.set_xlabel("disks in the snapshot")
        ax.set_ylabel("freeze window (ms)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"mon paxos_propose_interval\n{multidisk.interval_label(secs)}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
