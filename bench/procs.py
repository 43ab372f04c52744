"""Run one measured command: wall time, and the peak memory of every process in its tree.

Peak memory is each process's ``VmHWM`` (high-water resident set) read from ``/proc`` while it runs.
``ru_maxrss`` of a child cannot be used for that: a child started from a big Python process inherits
the parent's high-water mark at ``exec`` (vfork/fork share or copy its pages), so a 13 MB pg_dump
started from a 120 MB Python process reports 120 MB. ``VmHWM`` after ``exec`` is the child's own.
Polling every 50 ms costs a few small ``/proc`` reads; peaks are monotonic, so the last reading before
a process exits is its peak (a process that lives under 50 ms may be missed, which only matters for
tiny helpers like ``pg_restore --list``).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

POLL_SECONDS = 0.05


@dataclass
class Measured:
    argv: list[str]
    wall_s: float
    returncode: int
    #: peak resident set in KiB per process, keyed by ``"<name>:<pid>"``
    peaks_kib: dict[str, int] = field(default_factory=dict)

    def peak_of(self, name: str) -> int | None:
        """Largest peak (KiB) among processes called ``name`` (``/proc/PID/comm``), or None."""
        values = [v for k, v in self.peaks_kib.items() if k.rsplit(":", 1)[0] == name]
        return max(values) if values else None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except OSError:
            continue
    return found


def _hwm_kib(pid: int) -> tuple[str, int] | None:
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return name, int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class TreePoller(threading.Thread):
    def __init__(self, root_pid: int):
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.peaks: dict[str, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            stack = [self.root_pid]
            while stack:
                pid = stack.pop()
                seen = _hwm_kib(pid)
                if seen is not None:
                    key = f"{seen[0]}:{pid}"
                    self.peaks[key] = max(self.peaks.get(key, 0), seen[1])
                stack += _children(pid)
            self.done.wait(POLL_SECONDS)


def measure(argv: list[str], *, env: dict[str, str], cwd: str | Path | None = None,
            log_path: Path | None = None, stdout_path: str | None = None, check: bool = True) -> Measured:
    """Run ``argv`` and wait for it; ``stdout_path`` (e.g. ``/dev/null``) receives its standard output,
    otherwise stdout and stderr go to ``log_path`` (or are discarded)."""
    with open(log_path or os.devnull, "ab") as log, open(stdout_path or os.devnull, "wb") as sink:
        stdout = sink if stdout_path else log
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=log)
        poller = TreePoller(proc.pid)
        poller.start()
        _, status, _ = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        poller.done.set()
        poller.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = Measured(list(argv), wall, proc.returncode, poller.peaks)
    if check and proc.returncode != 0:
        where = f"; see {log_path}" if log_path else ""
        raise RuntimeError(f"{argv[0]} {' '.join(argv[1:3])}... failed with code {proc.returncode}{where}")
    return result
