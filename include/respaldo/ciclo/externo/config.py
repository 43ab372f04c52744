"""The inventory's ``external`` block: where the second copy of each artifact goes, and how long it stays.

Declared per frequency class (``frequencies.<clase>.external``) and overridable per target (the
target's block replaces its class's whole block). Three kinds, told apart by ``kind``:

- ``path``: a folder on a mounted disk that must hold a marker file, so an unmounted disk (whose empty
  mount point lies on ``/``) is refused instead of filling the system disk;
- ``sftp``: a folder on a server reached through an Airflow SSH connection (host key verified);
- ``s3``: a bucket of an S3-compatible store reached through an Airflow connection (access key in
  *Login*, secret in *Password*, ``endpoint_url`` and ``region_name`` in *Extra*, as the amazon
  provider's ``aws`` connection).

Pure pydantic: the DAG file imports this through the inventory.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from respaldo.ciclo.politica import Retention

#: The marker file a ``path`` destination must hold (created by hand on the mounted disk).
DEFAULT_MARKER = ".respaldo_medio_externo"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _plain_path(value: str, what: str) -> str:
    if not PurePosixPath(value).is_absolute():
        raise ValueError(f"{what} debe ser una ruta absoluta, no «{value}»")
    if any(char in value for char in '"\n\r\\'):
        raise ValueError(f"{what} no puede llevar comillas dobles, barras invertidas ni saltos de línea: «{value}»")
    return value.rstrip("/") or "/"


class _Destination(_Model):
    retention: Annotated[
        Retention | None,
        Field(description="Retención de las copias externas (mismas claves que `retention`); sin ella no se borra "
                          "ninguna copia externa.", examples=[{"keep_monthly": 24, "min_keep": 3}]),
    ] = None


class ExternalPath(_Destination):
    """A folder on a mounted disk (USB, NAS mounted by NFS/CIFS) that holds the marker file."""

    kind: Literal["path"]
    path: Annotated[str, Field(description="Carpeta del disco externo montado (ruta absoluta).",
                               examples=["/mnt/respaldo_externo"])]
    marker: Annotated[
        str, Field(pattern=r"^[A-Za-z0-9._-]{1,100}$",
                   description="Archivo que debe existir en `path`: prueba que el disco está montado. Créelo una vez, "
                               "con el disco montado: `touch /mnt/respaldo_externo/.respaldo_medio_externo`.")
    ] = DEFAULT_MARKER

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _plain_path(value, "la carpeta del medio externo")

    def describe(self) -> str:
        return f"el disco externo {self.path}"


class ExternalSftp(_Destination):
    """A folder on another server, by SFTP, through an Airflow SSH connection."""

    kind: Literal["sftp"]
    conn_id: Annotated[str, Field(min_length=1, description="Conexión de Airflow tipo ssh (llave del servidor "
                                  "verificada: extra `host_key`).", examples=["sftp_externo"])]
    path: Annotated[str, Field(description="Carpeta en ese servidor (ruta absoluta); la cuenta debe poder escribir.",
                               examples=["/srv/respaldos/putumayo"])]
    known_hosts: Annotated[
        str | None, Field(description="Archivo known_hosts con la llave del servidor, si la conexión no trae "
                          "`host_key`.")
    ] = None

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        return _plain_path(value, "la carpeta del servidor SFTP")

    def describe(self) -> str:
        return f"el servidor SFTP de la conexión «{self.conn_id}», carpeta {self.path}"


class ExternalS3(_Destination):
    """A bucket of an S3-compatible store (AWS S3, MinIO, Ceph, Wasabi...) through an Airflow connection."""

    kind: Literal["s3"]
    conn_id: Annotated[str, Field(min_length=1, description="Conexión de Airflow (tipo aws o generic): Login = "
                                  "access key id, Password = secret access key, Extra `endpoint_url` y "
                                  "`region_name`.", examples=["s3_externo"])]
    bucket: Annotated[str, Field(description="Bucket (debe existir).", examples=["respaldos-putumayo"])]
    prefix: Annotated[str, Field(description="Carpeta dentro del bucket, sin «/» inicial.", examples=["gobernacion"])
                      ] = ""

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value):
            raise ValueError(f"«{value}» no es un nombre de bucket válido: de 3 a 63 minúsculas, números, puntos o "
                             "guiones, empezando y terminando en letra o número")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"([A-Za-z0-9._-]+/)*[A-Za-z0-9._-]*", value):
            raise ValueError(f"«{value}» no sirve como carpeta del bucket: letras, números, «.», «_», «-» y «/» entre "
                             "carpetas, sin «/» al comienzo")
        return value

    def describe(self) -> str:
        return f"el bucket S3 «{self.bucket}» (conexión «{self.conn_id}»)"


External = Annotated[ExternalPath | ExternalSftp | ExternalS3, Field(discriminator="kind")]
#: The model of each ``external.kind``.
EXTERNAL_KINDS: dict[str, type[BaseModel]] = {"path": ExternalPath, "sftp": ExternalSftp, "s3": ExternalS3}
