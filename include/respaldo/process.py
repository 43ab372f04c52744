"""Running the dump tools: progress in the log, secrets blanked from their errors, no half-kept output.

The tools' credentials and environment come from :mod:`respaldo.hooks`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from respaldo.errors import CopyError
from respaldo.hooks.base import blank

PROGRESS_INTERVAL_SECONDS = 5.0


def human_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


def run_to_file(
    argv: Sequence[str],
    dest: Path,
    *,
    env: Mapping[str, str],
    log: logging.Logger,
    what: str,
    secrets: Sequence[str] = (),
    writes_dest_itself: bool = False,
    ok_codes: Sequence[int] = (0,),
    explain: Callable[[str, int], str] | None = None,
    warn: Callable[[str, int], str] | None = None,
    interval: float = PROGRESS_INTERVAL_SECONDS,
) -> int:
    """Run a dump tool whose output goes to ``dest``; log progress; return the bytes written.

    With ``writes_dest_itself`` the tool is given ``dest`` in ``argv`` (so it may seek in it, as
    ``pg_dump -Fc`` does); otherwise its standard output is sent to ``dest``. Progress is the size
    of ``dest`` polled every ``interval`` seconds, so it costs the copy nothing. On any failure,
    including this task being killed, the tool is stopped and ``dest`` removed: a partial copy never
    survives. ``secrets`` are blanked out of the tool's error text before it is reported; ``explain``
    may turn that text and the exit code into a plain reason put first. Exit codes in ``ok_codes`` count as success
    (GNU tar's 1, "a file changed while it was read", still makes a valid archive of a file share);
    ``warn`` may turn the text of such a success into a plain warning for the log.
    """
    dest.unlink(missing_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryFile() as stderr, contextlib.ExitStack() as stack:
        stdout = None
        if not writes_dest_itself:
            stdout = stack.enter_context(open(dest, "xb"))
        proc = subprocess.Popen(  # noqa: S603 - argv is built by respaldo, never by a shell
            list(argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, env=dict(env)
        )
        try:
            while True:
                try:
                    returncode = proc.wait(timeout=interval)
                    break
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    size = dest.stat().st_size if dest.exists() else 0
                    log.info(
                        "%s: %s copiados en %.0f s (%s/s)",
                        what, human_bytes(size), now - started, human_bytes(size / max(now - started, 1e-9)),
                    )
        except BaseException:
            proc.kill()
            proc.wait()
            dest.unlink(missing_ok=True)
            raise
        if stdout is not None:
            stdout.flush()
            os.fsync(stdout.fileno())
            stdout.close()
        stderr.seek(0)
        error_text = stderr.read().decode("utf-8", "replace").strip()
    check_exit(what, returncode, error_text, dest, log=log, ok_codes=ok_codes, secrets=secrets, explain=explain,
               warn=warn)
    size = dest.stat().st_size if dest.exists() else 0
    elapsed = time.monotonic() - started
    log.info("%s terminó: %s en %.1f s (%s/s)", what, human_bytes(size), elapsed,
             human_bytes(size / max(elapsed, 1e-9)))
    return size


def check_exit(
    what: str,
    returncode: int,
    error_text: str,
    dest: Path,
    *,
    log: logging.Logger,
    ok_codes: Sequence[int] = (0,),
    secrets: Sequence[str] = (),
    explain: Callable[[str, int], str] | None = None,
    warn: Callable[[str, int], str] | None = None,
) -> None:
    """Raise a plain :class:`CopyError` (and remove ``dest``) if a tool failed; log its warnings if not."""
    error_text = blank(error_text, secrets)
    if returncode in ok_codes:
        if error_text:
            log.warning("%s avisó: %s", what, error_text[-2000:])
        plain = warn(error_text, returncode) if warn and returncode else ""
        if plain:
            log.warning("%s: %s", what, plain)
        return
    dest.unlink(missing_ok=True)
    reason = f"terminó con la señal {-returncode}" if returncode < 0 else f"terminó con código {returncode}"
    plain = explain(error_text, returncode) if explain else ""
    if "No space left on device" in error_text:
        plain = no_space_message(dest.parent)
    if error_text:  # the whole text stays in the task log; the register and the email get its key line
        log.error("%s %s. Su salida de error completa:\n%s", what, reason, error_text[-20000:])
    if plain:
        raise CopyError(f"{what} {reason}: {plain}", detail=error_text)
    raise CopyError(f"{what} {reason}; el log de la tarea tiene su mensaje completo", detail=error_text)


def no_space_message(folder: Path) -> str:
    free = shutil.disk_usage(folder).free
    return (f"se quedó sin espacio en disco en {folder} ({human_bytes(free)} libres); libere espacio o amplíe el "
            "disco y vuelva a ejecutar")
