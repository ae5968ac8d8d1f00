"""Options and the run: start the daemons on the bed the wrapper brought up,
run the cases in order, check nothing was left behind, print the tables,
write the report and plot. Exit status 1 when any case had an error (or
something was left behind), 2 on bad options."""
import argparse
import os
import signal
import sys

GIB = 1 << 30
MIB = 1 << 20
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def parse_sizes(text):
    """"1,4" (GiB), "64M", "512M,1G" → bytes, multiples of 4 MiB."""
    sizes = []
    for item in text.split(","):
        item = item.strip()
        try:
            if item.upper().endswith("M"):
                size = int(float(item[:-1]) * MIB)
            else:
                size = int(float(item.upper().rstrip("G")) * GIB)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad size {item!r}: GiB, or MiB with M")
        if size <= 0 or size % (4 * MIB):
            raise argparse.ArgumentTypeError(f"size {item!r} is not a positive multiple of 4 MiB")
        sizes.append(size)
    return sizes


# what --cases takes, in the order the cases run
CASES = ("freeze", "e2e", "load", "multidisk")


def parse_cases(text):
    """"freeze,multidisk" → those names, in CASES order."""
    names = {item.strip() for item in text.split(",") if item.strip()}
    unknown = names - set(CASES)
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown case(s) {', '.join(sorted(unknown)) or '(none)'}: choose from "
            + ",".join(CASES))
    return [c for c in CASES if c in names]


def parser():
    p = argparse.ArgumentParser(
        prog="dev/bench",
        description="rbdsnapd beside the command-line way and an in-process Python "
                    "script (issues 7, 14): sets up, builds, brings up its own test bed, "
                    "runs every case (or --cases), tears the bed down.")
    p.add_argument("--n", type=int, help="runs per way and case (default 20; --smoke: 1)")
    p.add_argument("--sizes", type=parse_sizes,
                   help="source image sizes for cases 2-4, in GiB, or MiB with M "
                        "(default 1,4; --smoke: 64M)")
    p.add_argument("--cases", type=parse_cases, default=list(CASES),
                   help="run only these cases, comma-separated: freeze (1), e2e (2-4), "
                        "load (5-6), multidisk (7) (default: all). With only some, the "
                        "report is merged: their sections and targets replace those in "
                        "the existing --out file, the rest of it stays")
    p.add_argument("--out", help="write the report here (default docs/benchmarks.md; "
                                 "--smoke: none)")
    p.add_argument("--plot", help="write the freeze-window plot (PNG) here "
                                  "(default docs/freeze-window.png when case 1 runs; "
                                  "--smoke: none); case 7's plot goes beside the report "
                                  "as multidisk-freeze-window.png")
    p.add_argument("--json", help="also write every raw sample here")
    p.add_argument("--smoke", action="store_true",
                   help="a quick check that every case works (CI): N=1, 64 MiB, "
                        "short latency and rados bench runs; exit 1 on any error")
    p.add_argument("--store", choices=("memstore", "bluestore"),
                   help="the OSD's store (default bluestore: GiB images would take "
                        "~2 GiB of RAM each in memstore; --smoke: memstore)")
    p.add_argument("--port-base", type=int, default=28800,
                   help="first of the 50 ports of the bed's cluster (default 28800)")
    p.add_argument("--latency-secs", type=float,
                   help="seconds of paced daemon.status requests (default 5; --smoke: 1)")
    p.add_argument("--rados-bench-secs", type=int,
                   help="seconds of each `rados bench write` (default 10; --smoke: 2)")
    p.add_argument("--pause", type=float, default=0.2,
                   help="seconds between two runs (default 0.2)")
    return p


def resolve(args):
    smoke = args.smoke
    if args.plot is None and "freeze" not in args.cases:
        args.plot = ""  # its data comes from case 1 only: keep the old plot
    for key, full, quick in (("n", 20, 1), ("sizes", [GIB, 4 * GIB], [64 * MIB]),
                             ("out", "docs/benchmarks.md", None),
                             ("plot", "docs/freeze-window.png", None),
                             ("store", "bluestore", "memstore"),
                             ("latency_secs", 5.0, 1.0), ("rados_bench_secs", 10, 2)):
        if getattr(args, key) is None:
            setattr(args, key, quick if smoke else full)
    if args.n < 1:
        raise SystemExit("dev/bench: --n must be at least 1")
    if not 1024 <= args.port_base <= 65535 - 50:
        raise SystemExit("dev/bench: --port-base must leave 50 ports below 65536")
    return args


def _interrupted(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv):
    if argv and argv[0] == "plan":
        # for the wrapper: validate the options, say how to build the bed
        args = resolve(parser().parse_args(argv[1:]))
        print(f"bench_store={args.store} bench_port_base={int(args.port_base)}")
        return 0
    if not argv or argv[0] != "run" or len(argv) < 3 or argv[1] != "--bed":
        print("use dev/bench", file=sys.stderr)
        return 2
    bed, user_argv = argv[2], argv[3:]
    args = resolve(parser().parse_args(user_argv))
    # SIGTERM (the wrapper forwards SIGINT as SIGTERM) unwinds through every
    # finally: guests thawed, images removed, daemons stopped
    signal.signal(signal.SIGTERM, _interrupted)
    from .run import Bench
    try:
        return Bench(args, bed, user_argv).main()
    except KeyboardInterrupt as exc:
        print(f"bench: interrupted ({exc or 'SIGINT'}); cleaned up", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
