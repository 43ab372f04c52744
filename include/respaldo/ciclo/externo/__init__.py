"""The second medium ("medio externo"): each copy also written to a mounted disk, an SFTP server or an S3 store.

- :mod:`.config`: the inventory's ``external`` block (per frequency class, overridable per target).
- :mod:`.base`: :class:`~.base.Destination`, the one interface of the three destinations (put under a
  temporary name, verify at the destination, then the final name; exists; sha256 at the destination;
  delete; check), and :class:`~.base.ExternalError`.
- :mod:`.disco` (``kind: path``), :mod:`.sftp` (``kind: sftp``), :mod:`.s3` (``kind: s3``).
- :mod:`.tarea`: the task ``copia_externa`` (after ``registrar``), its failure callback (row and email;
  the backup row stays ``success``), the register columns ``external_*`` and
  :func:`~.tarea.apply_external_retention`.

The DAG file imports only :mod:`.config` (through the inventory); everything else is imported by task
code, so paramiko and boto3 never weigh on parsing.
"""

from respaldo.ciclo.externo.config import External, ExternalPath, ExternalS3, ExternalSftp

__all__ = ["External", "ExternalPath", "ExternalS3", "ExternalSftp"]
