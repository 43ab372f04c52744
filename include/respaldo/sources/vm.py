"""Virtual servers: disk images on a hypervisor reached over SSH, every eight days by default.

The images travel as one tar stream (``--sparse``, so unallocated space costs nothing) and are
compressed as they arrive: an image of tens of GB never lands uncompressed on the local disk, and
memory stays flat. Optional commands run on the hypervisor before (take a snapshot, export a domain,
``qemu-img convert``) and after the copy (drop the snapshot); their output goes to the task log, and
the "after" command runs even when the copy fails. An image that changes while it is read is torn (GNU
tar exits 1): that copy fails and is discarded, so a running machine needs a snapshot taken in
"before" and copied instead of its live disk. Restore with standard tools:
``zstd -dc X.tar.zst | tar -xS -C DESTINO``.

Least privileges: an account on the hypervisor that can read the images (and run the before/after
commands, e.g. through a narrow sudo rule); nothing else.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import Field, field_validator

from respaldo.artifacts import copy_compressed, sealed_path
from respaldo.errors import CopyError
from respaldo.hooks.ssh import SshSession, explain_ssh_failure, openssh_session
from respaldo.sources.base import CopyResult, Source, TargetBase, recipients_of
from respaldo.sources.files import changed_while_read, explain_tar, tar_argv
from respaldo.ssh import check_readable

HOOK_OUTPUT_LIMIT = 20_000


class VmTarget(TargetBase):
    """Disk images of a virtual server, on a hypervisor reached over SSH."""

    kind: Literal["vm"]
    conn_id: Annotated[
        str, Field(min_length=1, description="Conexión SSH de Airflow al hipervisor.", examples=["ssh_hipervisor"])
    ]
    images: Annotated[
        list[str],
        Field(min_length=1, description="Rutas absolutas de las imágenes de disco en el hipervisor.",
              examples=[["/var/lib/libvirt/images/correo.qcow2"]]),
    ]
    before: Annotated[
        str | None,
        Field(description="Comando (sh) en el hipervisor antes de copiar: tomar una instantánea, exportar...",
              examples=["virsh snapshot-create-as correo respaldo --disk-only --atomic"]),
    ] = None
    after: Annotated[
        str | None,
        Field(description="Comando (sh) en el hipervisor después de copiar, aunque la copia falle.",
              examples=["virsh blockcommit correo vda --active --pivot"]),
    ] = None
    known_hosts: Annotated[
        str | None,
        Field(description="Archivo known_hosts con la llave del hipervisor, si la conexión no trae «host_key».",
              examples=["/etc/respaldo/known_hosts"]),
    ] = None

    @field_validator("images")
    @classmethod
    def _absolute(cls, values: list[str]) -> list[str]:
        for value in values:
            path = PurePosixPath(value)
            if not path.is_absolute() or ".." in path.parts:
                raise ValueError(f"«{value}» debe ser una ruta absoluta sin «..»")
        return values


def _explain_torn(error_text: str, returncode: int, target: VmTarget) -> str:
    """Why tar's exit 1 fails a VM copy: an image written to while it was read is torn, not a backup.

    GNU tar exits 1 when a file changed while it read it. For a running machine's disk that means
    blocks from different moments side by side: a copy that may not even boot. Only a frozen image
    (a snapshot, or the machine shut down) gives a usable one.
    """
    if returncode != 1:
        return ""
    changed = ["/" + name.lstrip("/") for name in changed_while_read(error_text)] or target.images
    return (f"la imagen {', '.join(changed)} cambió mientras se copiaba (la máquina virtual seguía escribiendo en "
            "ella), así que la copia no sirve como respaldo y se descartó. Tome una instantánea en el comando "
            "«antes» (before) y copie la instantánea, o apague la máquina virtual durante la copia.")


def _run_hook(session: SshSession, label: str, command: str, log: logging.Logger) -> None:
    """Run a before/after command on the hypervisor; its output goes to the task log."""
    log.info("Comando «%s» en %s: %s", label, session.describe(), command)
    proc = subprocess.run(  # noqa: S603 - argv built here; the command is the inventory's, run remotely
        session.argv(["sh", "-c", command]), env=session.env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, check=False,
    )
    for stream, text in (("salida", proc.stdout), ("errores", proc.stderr)):
        for line in session.blank(text[-HOOK_OUTPUT_LIMIT:]).splitlines():
            log.info("«%s» (%s): %s", label, stream, line)
    if proc.returncode != 0:
        reason = (explain_ssh_failure(proc.stderr, session, proc.returncode)
                  or "revise el comando en el inventario y su salida en el log de la tarea")
        raise CopyError(f"El comando «{label}» falló en {session.describe()} (código {proc.returncode}): {reason}",
                        detail=session.blank(proc.stderr.strip()))


class VmSource(Source):
    kind = "vm"
    model = VmTarget
    extension = "tar"
    label = "servidor virtual (imágenes de disco)"
    category = "servidores virtuales"
    restore_hint = "mkdir DESTINO && zstd -dc {artifact} | tar -xS -C DESTINO"
    compresses = True

    def copy(self, target: VmTarget, dest: Path, log: logging.Logger) -> CopyResult:
        relative = [str(PurePosixPath(image).relative_to("/")) for image in target.images]
        with openssh_session(target.conn_id, known_hosts=target.known_hosts) as session:
            try:
                if target.before:
                    _run_hook(session, "antes", target.before, log)
                log.info("Copiando %s desde %s, comprimiendo al llegar", ", ".join(target.images), session.describe())
                done = copy_compressed(
                    session.argv(tar_argv("/", relative, [], sparse=True)), dest, env=session.env, log=log,
                    what=f"copia de imágenes por SSH desde {session.describe()}", secrets=session.secrets,
                    explain=lambda text, code: (_explain_torn(text, code, target)
                                                or explain_ssh_failure(text, session, code)
                                                or explain_tar(text, f"el hipervisor {session.describe()}")),
                    recipients=recipients_of(target),
                )
            except BaseException as copy_error:
                if target.after:
                    try:
                        _run_hook(session, "después", target.after, log)
                    except CopyError as after_error:
                        log.error("%s", after_error)
                        if isinstance(copy_error, CopyError):
                            raise CopyError(f"{copy_error} Además: {after_error}") from copy_error
                raise
            if target.after:
                try:
                    _run_hook(session, "después", target.after, log)
                except CopyError as err:
                    for path in (dest, sealed_path(dest)):
                        path.unlink(missing_ok=True)
                    raise CopyError(f"La copia terminó, pero {str(err)[0].lower()}{str(err)[1:]} Revise el "
                                    "hipervisor (¿quedó una instantánea abierta?) y vuelva a ejecutar.") from err
        if done.original == 0:
            for path in (dest, sealed_path(dest)):
                path.unlink(missing_ok=True)
            raise CopyError("La copia de las imágenes está vacía.")
        return CopyResult(path=dest, bytes=done.compressed, compressed=True, original_bytes=done.original,
                          sha256=done.sha256, sealed=done.sealed)

    def check(self, target: VmTarget) -> str:
        where = check_readable(target.conn_id, target.images, target.known_hosts)
        return f"{len(target.images)} imagen(es) en {where}"

    def summary(self, target: VmTarget) -> str:
        what = f"{len(target.images)} imagen(es) de disco por SSH (conexión `{target.conn_id}`)"
        return f"{what}: {target.description}" if target.description else what
