"""Artifacts: compressed with zstd, a .sha256 beside them, never half-written, never overwritten."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import zoneinfo
from pathlib import Path

import pytest

from respaldo import artifacts
from respaldo.errors import ArtifactError

log = logging.getLogger("test")


@pytest.fixture
def original(tmp_path) -> Path:
    path = tmp_path / "copia.dump"
    # 3 MiB that do not compress, then 6 MiB that do: the artifact is bigger than the 1 MiB disk below.
    path.write_bytes(os.urandom(3 << 20) + b"texto repetido de la gobernaci\xc3\xb3n " * 200_000)
    return path


def test_the_artifact_path_follows_the_documented_layout():
    at = dt.datetime(2026, 3, 7, 22, 5, 9, tzinfo=zoneinfo.ZoneInfo("America/Bogota"))
    path = artifacts.artifact_path("/var/backups/respaldo", "financiero", "financiero_pg", at, "dump")
    assert path == Path("/var/backups/respaldo/financiero/financiero_pg/2026/03/financiero_pg_20260307T220509.dump.zst")


def test_compressed_artifact_restores_byte_for_byte_with_the_zstd_tool(original, tmp_path):
    final = tmp_path / "out" / "a" / "x.dump.zst"
    artifact = artifacts.compress(original, final, log)

    assert artifact.path == final and artifact.original_bytes == original.stat().st_size
    assert artifact.compressed_bytes == final.stat().st_size < artifact.original_bytes
    restored = subprocess.run(["zstd", "-dc", str(final)], capture_output=True, check=True).stdout
    assert restored == original.read_bytes()
    check = subprocess.run(["sha256sum", "-c", "x.dump.zst.sha256"], cwd=final.parent, capture_output=True, text=True)
    assert check.stdout.strip() == "x.dump.zst: OK"
    assert sorted(p.name for p in final.parent.iterdir()) == ["x.dump.zst", "x.dump.zst.sha256"]


def test_an_existing_artifact_with_other_content_is_never_overwritten(original, tmp_path):
    final = tmp_path / "x.dump.zst"
    final.write_bytes(b"respaldo anterior")
    with pytest.raises(ArtifactError, match="no se sobrescribe"):
        artifacts.compress(original, final, log)
    assert final.read_bytes() == b"respaldo anterior"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copia.dump", "x.dump.zst"]


def test_a_retry_that_produces_the_same_artifact_keeps_it(original, tmp_path):
    final = tmp_path / "x.dump.zst"
    first = artifacts.compress(original, final, log)
    inode = final.stat().st_ino
    second = artifacts.compress(original, final, log)
    assert second == first and final.stat().st_ino == inode


@pytest.fixture
def tiny_disk(tmp_path):
    mountpoint = tmp_path / "disco"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], check=True)
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True)


def test_a_full_disk_fails_with_a_plain_message_and_leaves_no_partial_file(original, tiny_disk):
    earlier = tiny_disk / "anterior.dump.zst"
    earlier.write_bytes(b"respaldo anterior")
    with pytest.raises(ArtifactError) as failure:
        artifacts.compress(original, tiny_disk / "x.dump.zst", log)
    assert "No hay espacio en disco" in str(failure.value) and str(tiny_disk) in str(failure.value)
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["anterior.dump.zst"]
    assert earlier.read_bytes() == b"respaldo anterior"


def test_staging_removal_never_touches_anything_outside_staging(tmp_path):
    keep = tmp_path / "financiero"
    keep.mkdir()
    (keep / "a.zst").write_bytes(b"x")
    artifacts.remove_staging(keep)
    assert (keep / "a.zst").exists()
    staged = artifacts.staging_dir(tmp_path, "financiero", "pg", "manual__2026-01-01T00:00:00+00:00")
    staged.mkdir(parents=True)
    (staged / "pg.dump").write_bytes(b"x")
    artifacts.remove_staging(staged)
    assert not staged.exists() and (keep / "a.zst").exists()
