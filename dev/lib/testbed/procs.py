"""Starting, waiting for and stopping the bed's processes.

Daemons started here are not our children for long (we exit after `up`), and
with no systemd as PID 1 a dead daemon can linger as a zombie: liveness is
read from /proc/PID/stat, never from kill(pid, 0).
"""
import os
import signal
import subprocess
import time


class BedError(Exception):
    """A step of bringing the bed up or down failed; the message says which."""


def spawn(argv, log_path, env=None):
    """Start a long-running daemon in its own session, output to log_path."""
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, env=env,
    )
    log.close()
    return proc.pid


def run(argv, timeout=60, input=None, env=None):
    """Run a short command; raise BedError with its output if it fails."""
    try:
        res = subprocess.run(argv, input=input, capture_output=True,
                             timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise BedError(f"{argv[0]} timed out after {timeout}s: {' '.join(argv)}")
    if res.returncode != 0:
        raise BedError(f"{' '.join(argv)} failed ({res.returncode}): "
                       f"{res.stderr.decode(errors='replace').strip()}")
    return res.stdout


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_for(what, probe, timeout, interval=0.05):
    """Call probe() until it returns a truthy value; BedError after timeout.

    probe may raise: the last exception is reported if time runs out.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:  # the probe's failures are expected while waiting
            last = exc
        if time.monotonic() > deadline:
            detail = f": {last}" if last else ""
            raise BedError(f"{what} not ready after {timeout}s{detail}")
        time.sleep(interval)
        interval = min(interval * 1.5, 1.0)


def stop(pid, name, timeout=15):
    """SIGTERM, then SIGKILL after timeout; wait until the process is gone."""
    if not pid or not alive(pid):
        return
    for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            try:  # reap it if it happens to be our child
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
    raise BedError(f"{name} (pid {pid}) survived SIGKILL")


def pids_matching(needle):
    """Pids whose command line contains needle (a backstop for lost pids)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmd and alive(int(entry)):
            found.append(int(entry))
    return found


def tail(path, lines=30):
    """The last lines of a log file, for error reports."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return f"(no {path})"
