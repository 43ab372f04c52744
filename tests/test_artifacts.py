"""Artifacts: compressed with zstd, a .sha256 beside them, never half-written, never overwritten."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import subprocess
import zoneinfo
from pathlib import Path

import pytest
import zstandard

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


def fill_leaving(mountpoint: Path, pages: int) -> Path:
    """Fill a tmpfs (it allocates whole 4 KiB pages) so exactly ``pages`` pages stay free."""
    stat = os.statvfs(mountpoint)
    assert stat.f_bsize == 4096 and stat.f_bavail >= pages
    filler = mountpoint / "relleno"
    with open(filler, "wb") as handle:
        handle.write(b"\0" * ((stat.f_bavail - pages) * 4096))
    assert os.statvfs(mountpoint).f_bavail == pages
    return filler


def pages_of(size: int) -> int:
    return -(-size // 4096)


def earlier_artifact(folder: Path) -> Path:
    """A real earlier artifact with its .sha256, made by respaldo itself."""
    source = folder.parent / "anterior.tar"
    source.write_bytes(b"respaldo anterior de la gobernaci\xc3\xb3n\n" * 1000)
    artifact = artifacts.compress(source, folder / "objetivo_20260101T130000.tar.zst", log)
    source.unlink()
    return artifact.path


def assert_still_verifies(artifact: Path) -> None:
    check = subprocess.run(["sha256sum", "-c", artifact.name + ".sha256"], cwd=artifact.parent, capture_output=True,
                           text=True)
    assert check.returncode == 0 and check.stdout.strip() == f"{artifact.name}: OK", check.stdout + check.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MiB tmpfs: the tests fill it to the page."""
    mountpoint = tmp_path / "disco"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)], check=True)
    yield mountpoint
    subprocess.run(["umount", str(mountpoint)], check=True)


def test_a_disk_that_fills_before_the_checksum_of_a_compressed_copy_leaves_neither_file(original, small_disk, tmp_path):
    """The artifact fits on the disk and its .sha256 does not: neither gets its name, nothing temporary stays."""
    folder = small_disk / "diario" / "objetivo"
    folder.mkdir(parents=True)
    earlier = earlier_artifact(folder)
    size = artifacts.compress(original, tmp_path / "ensayo.dump.zst", log).compressed_bytes
    filler = fill_leaving(small_disk, pages_of(size))

    final = folder / "objetivo_20260102T130000.dump.zst"
    with pytest.raises(ArtifactError) as failure:
        artifacts.compress(original, final, log)

    assert str(failure.value).startswith(f"No hay espacio en disco en {folder} (")
    assert "libres) para guardar el respaldo objetivo_20260102T130000.dump.zst con su suma de verificación" in str(
        failure.value)
    assert sorted(p.name for p in folder.iterdir()) == [earlier.name, earlier.name + ".sha256"]
    assert sorted(p.name for p in small_disk.iterdir()) == ["diario", filler.name]
    assert_still_verifies(earlier)


def test_a_disk_that_fills_before_the_checksum_of_a_copy_compressed_in_flight_leaves_neither_file(small_disk):
    """place_compressed gives a staged .zst its name: on a full disk no name appears and the staged copy stays."""
    folder = small_disk / "diario" / "objetivo"
    folder.mkdir(parents=True)
    earlier = earlier_artifact(folder)
    staged = artifacts.staging_dir(small_disk, "diario", "objetivo", "manual__2026-01-02T13:00:00+00:00")
    staged.mkdir(parents=True)
    copy = staged / "objetivo.dump.zst"
    data = zstandard.ZstdCompressor(write_checksum=True).compress(b"copia comprimida al llegar\n" * 5000)
    copy.write_bytes(data)
    fill_leaving(small_disk, 0)

    final = folder / "objetivo_20260102T130000.dump.zst"
    with pytest.raises(ArtifactError, match=f"^No hay espacio en disco en {folder} \\(0 B libres\\)"):
        artifacts.place_compressed(copy, final, hashlib.sha256(data).hexdigest(), 5000 * 27, log)

    assert sorted(p.name for p in folder.iterdir()) == [earlier.name, earlier.name + ".sha256"]
    assert [p.name for p in staged.iterdir()] == [copy.name] and copy.read_bytes() == data
    assert_still_verifies(earlier)


def test_a_retry_after_a_full_disk_publishes_the_artifact_with_its_checksum(original, small_disk, tmp_path):
    folder = small_disk / "objetivo"
    folder.mkdir()
    size = artifacts.compress(original, tmp_path / "ensayo.dump.zst", log).compressed_bytes
    filler = fill_leaving(small_disk, pages_of(size))
    final = folder / "objetivo_20260102T130000.dump.zst"
    with pytest.raises(ArtifactError, match="No hay espacio en disco"):
        artifacts.compress(original, final, log)

    filler.unlink()
    artifact = artifacts.compress(original, final, log)
    assert sorted(p.name for p in folder.iterdir()) == [final.name, final.name + ".sha256"]
    assert_still_verifies(artifact.path)


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


def test_a_copy_removes_what_earlier_runs_of_its_target_left_in_staging_and_nothing_else(tmp_path):
    """What cierre on another worker cannot reach, the target's next copia removes."""
    old = artifacts.staging_dir(tmp_path, "diario", "pg", "scheduled__2026-01-01T00:00:00+00:00")
    now = artifacts.staging_dir(tmp_path, "diario", "pg", "manual__2026-01-02T00:00:00+00:00")
    other = artifacts.staging_dir(tmp_path, "diario", "otro", "scheduled__2026-01-01T00:00:00+00:00")
    for folder in (old, now, other):
        folder.mkdir(parents=True)
        (folder / "x.dump").write_bytes(b"x")
    artifact = tmp_path / "diario" / "pg" / "2026" / "01" / "pg_20260101T000000.dump.zst"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(b"x")

    assert artifacts.remove_leftovers(tmp_path, "diario", "pg", keep=now) == [old]
    assert not old.exists() and now.exists() and other.exists() and artifact.exists()
    assert artifacts.remove_leftovers(tmp_path, "diario", "nuevo", keep=now) == []
