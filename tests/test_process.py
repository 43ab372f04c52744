"""Running the copy tools: progress in the log, secrets blanked, nothing partial on failure."""

from __future__ import annotations

import logging
import re
import subprocess

import pytest
import zstandard

from respaldo import artifacts
from respaldo.errors import CopyError
from respaldo.process import run_to_file

SLOW = ["sh", "-c", "head -c 3000000 /dev/zero; sleep 1.5; head -c 2000000 /dev/zero"]


def test_a_long_copy_logs_its_progress(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="respaldo")
    size = run_to_file(SLOW, tmp_path / "out", env={"PATH": "/usr/bin:/bin"}, log=logging.getLogger("respaldo"),
                       what="copia lenta", interval=0.3)
    assert size == 5_000_000
    progress = [r.getMessage() for r in caplog.records if "copiados en" in r.getMessage()]
    assert len(progress) >= 3 and progress[0].startswith("copia lenta: 2.9 MiB copiados en")
    assert "copia lenta terminó: 4.8 MiB" in caplog.text


def test_a_failed_tool_leaves_no_file_and_its_error_has_no_secret(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="respaldo")
    argv = ["sh", "-c", "head -c 1000 /dev/zero; echo 'conectando a la base' >&2; "
            "echo 'auth failed for clave S3creta!' >&2; echo 'segunda línea' >&2; exit 3"]
    with pytest.raises(CopyError) as failure:
        run_to_file(argv, tmp_path / "out", env={"PATH": "/usr/bin:/bin"}, log=logging.getLogger("respaldo"),
                    what="volcado", secrets=["S3creta!"])
    # The register and the email get one sentence and the tool's key line; the log gets all of it.
    assert str(failure.value) == ("volcado terminó con código 3; el log de la tarea tiene su mensaje completo "
                                  "(detalle: auth failed for clave ********)")
    assert "conectando a la base\nauth failed for clave ********\nsegunda línea" in caplog.text
    assert "S3creta!" not in caplog.text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("output", "line"), [
    ("pg_dump: error: connection to server at \"10.0.0.5\", port 5432 failed: FATAL:  password authentication "
     "failed for user \"respaldo\"\n", "pg_dump: error: connection to server at \"10.0.0.5\", port 5432 failed: "
     "FATAL:  password authentication failed for user \"respaldo\""),
    ("tar: contratos: Cannot stat: No such file or directory\ntar: Exiting with failure status due to previous "
     "errors\n", "tar: contratos: Cannot stat: No such file or directory"),
    ("@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
     "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
     "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
     "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n"
     "Host key for [127.0.0.1]:2222 has changed and you have requested strict checking.\n"
     "Host key verification failed.\n", "Host key verification failed."),
    ("mariadb-dump: Got error: 1045: \"Access denied for user 'r'@'localhost' (using password: YES)\" when "
     "trying to connect\n", "mariadb-dump: Got error: 1045: \"Access denied for user 'r'@'localhost' (using "
     "password: YES)\" when trying to connect"),
    ("una sola línea sin palabras de error\n", "una sola línea sin palabras de error"),
    ("x" * 500, "x" * 299 + "…"),
])
def test_the_key_line_of_a_tools_output_is_its_first_verdict(output, line):
    from respaldo.errors import key_line

    assert key_line(output) == line


def test_an_allowed_exit_code_keeps_the_copy_and_logs_the_warning(tmp_path, caplog):
    argv = ["sh", "-c", "echo datos; echo 'file changed as we read it' >&2; exit 1"]
    size = run_to_file(argv, tmp_path / "out", env={"PATH": "/usr/bin:/bin"}, log=logging.getLogger("respaldo"),
                       what="tar", ok_codes=(0, 1))
    assert size == 6 and "tar avisó: file changed as we read it" in caplog.text


def test_compressing_while_copying_counts_both_sizes_and_restores_exactly(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(artifacts, "PROGRESS_INTERVAL_SECONDS", 0.3)
    caplog.set_level(logging.INFO, logger="respaldo")
    dest = tmp_path / "img.tar.zst"
    written = artifacts.copy_compressed(
        SLOW, dest, env={"PATH": "/usr/bin:/bin"}, log=logging.getLogger("respaldo"), what="imagen")
    original, compressed, sha256 = written.original, written.compressed, written.sha256
    assert written.sealed is None
    assert original == 5_000_000 and compressed == dest.stat().st_size < 10_000
    assert subprocess.run(["sha256sum", str(dest)], capture_output=True, text=True).stdout.split()[0] == sha256
    assert zstandard.ZstdDecompressor().decompressobj().decompress(dest.read_bytes()) == b"\0" * 5_000_000
    assert re.search(r"imagen: [0-9.]+ MiB copiados y comprimidos en \d+ s", caplog.text)


def test_compressing_while_copying_removes_the_file_when_the_tool_fails(tmp_path):
    with pytest.raises(CopyError, match="imagen terminó con código 4"):
        artifacts.copy_compressed(["sh", "-c", "head -c 100000 /dev/urandom; exit 4"], tmp_path / "x.zst",
                                  env={"PATH": "/usr/bin:/bin"}, log=logging.getLogger("t"), what="imagen")
    assert list(tmp_path.iterdir()) == []
