"""Bench section 16: what encrypting the copies with age (``encryption``) adds, on the 1 GB PostgreSQL database.

    python -m bench.run --only cifrado        # this section alone: its own cluster, 1 GB and 100 MB databases

14a. Our four tasks end to end (``bench.chain``, as section 2) on the 1 GB database, plain (``.dump.zst``)
     and encrypted to one X25519 recipient (``.dump.zst.age``), rounds interleaved, medians. Goal: the
     encrypted chain takes at most 10% longer.
14b. Memory: the chain process's peak RSS (``RUSAGE_SELF``) encrypted, on 1 GB against 100 MB (flat), and
     the ``age`` child's own peak (``VmHWM`` polled, :mod:`bench.procs`).
14c. Once: Debian's ``age -d -i KEY FILE | zstd -t`` reads the encrypted artifact whole (what a person
     restoring by hand types), timed beside ``zstd -t`` of the plain artifact.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

GOALS = {"chain": 1.10, "flat": 1.20}
MB = 1_000_000


def keypair(folder: Path) -> tuple[Path, str]:
    """An age key pair made as the README says (``age-keygen -o``): the key file and its public ``age1…``."""
    key = folder / "clave-bench.txt"
    key.unlink(missing_ok=True)
    done = subprocess.run(["age-keygen", "-o", str(key)], capture_output=True, text=True, check=True)
    return key, done.stderr.split("Public key: ")[1].strip()


def encryption(public: str) -> dict:
    return {"encryption": {"recipients": [public]}}


def read_back(artifact: Path, key: Path | None) -> dict:
    """``[age -d -i KEY FILE |] zstd -t``: the whole artifact read back with the standard tools, timed."""
    command = f"age -d -i '{key}' '{artifact}' | zstd -qt" if key else f"zstd -qt '{artifact}'"
    began = time.perf_counter()
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, check=False)
    return {"wall_s": time.perf_counter() - began, "ok": done.returncode == 0, "error": done.stderr.strip()[-300:]}


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def build_rows(data: dict) -> list[list[str]]:
    plain, sealed, small = data["plain"], data["sealed"], data["sealed_small"]
    t_plain = _median([r["work_s"] for r in plain])
    t_sealed = _median([r["work_s"] for r in sealed])
    steps = {s: (_median([r["steps"][s] for r in plain]), _median([r["steps"][s] for r in sealed]))
             for s in plain[0]["steps"]}
    rss_plain = _median([r["self_maxrss_kib"] for r in plain])
    rss_big = _median([r["self_maxrss_kib"] for r in sealed])
    rss_small = _median([r["self_maxrss_kib"] for r in small])
    age_big = _median([r.get("age_peak_kib") for r in sealed])
    age_small = _median([r.get("age_peak_kib") for r in small])
    size_plain = _median([r["artifact"]["compressed_bytes"] for r in plain])
    size_sealed = _median([r["artifact"]["compressed_bytes"] for r in sealed])
    ratio = t_sealed / t_plain
    split = "; ".join(f"{name.replace('verificar_fecha', 'verificar')} {a:.2f} -> {b:.2f}"
                      for name, (a, b) in steps.items())
    back = data["read_back"]
    opened = "reads whole" if back["sealed"]["ok"] else "FAILED: " + back["sealed"]["error"]
    return [
        ["16", "4 tasks end to end, 1 GB, encrypted (age, 1 recipient)", f"{t_sealed:.2f} s",
         f"same chain, not encrypted: {t_plain:.2f} s", f"{ratio:.3f}x", f"<= {GOALS['chain']:.2f}x",
         "PASS" if ratio <= GOALS["chain"] else "MISS"],
        ["16", "  split by task, plain -> encrypted (s)", split, "", "", "", "info"],
        ["16", "stored size, 1 GB", f"{size_sealed / MB:.1f} MB (.zst.age)", f".zst: {size_plain / MB:.1f} MB",
         f"{size_sealed / size_plain:.4f}x", "", "info"],
        ["16", "peak RSS, chain process, encrypted: 1 GB / 100 MB",
         f"{rss_big / 1024:.0f} / {rss_small / 1024:.0f} MiB",
         f"plain 1 GB: {rss_plain / 1024:.0f} MiB", f"{rss_big / rss_small:.3f}x", f"<= {GOALS['flat']:.2f}x",
         "PASS" if rss_big / rss_small <= GOALS["flat"] else "MISS"],
        ["16", "  age child of copia, peak (100 MB / 1 GB)",
         f"{(age_small or 0) / 1024:.0f} / {(age_big or 0) / 1024:.0f} MiB", "", "", "", "info"],
        ["16", "age -d -i KEY | zstd -t of the 1 GB artifact (by hand)",
         f"{back['sealed']['wall_s']:.2f} s ({opened})",
         f"zstd -t of the plain artifact: {back['plain']['wall_s']:.2f} s",
         f"{back['sealed']['wall_s'] / back['plain']['wall_s']:.3f}x", "", "PASS" if back["sealed"]["ok"] else "MISS"],
    ]


def rounds_text(data: dict) -> str:
    def values(runs):
        return ", ".join(f"{r['work_s']:.2f}" for r in runs)

    return (f"- 1 GB, four tasks, plain: {values(data['plain'])}; encrypted: {values(data['sealed'])}\n"
            f"- 100 MB, four tasks, encrypted: {values(data['sealed_small'])}")


HOW = ("- 16: `bench/cifrado.py`, run alone by `python -m bench.run --only cifrado`. The chain is section 2's "
       "(`bench/chain.py`, the four callables of `respaldo.tasks` in one process); encrypted, the target carries "
       "`encryption: {recipients: [age1…]}` from a fresh `age-keygen`. `copia` then writes the zstd stream to its "
       "file and into `age -r` (a child process) whose output a thread hashes and writes beside it; "
       "`verificar_fecha` reads the plaintext as always and, in a thread beside it, re-reads the `.zst.age` "
       "against the sum taken while age wrote it; `comprimir` links the `.zst.age`. Peaks as in 6.")
