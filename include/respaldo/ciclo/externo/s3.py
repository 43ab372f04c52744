"""``kind: s3``: a bucket of an S3-compatible store, with boto3 and an Airflow connection.

Why boto3 and not the amazon provider's S3Hook: the provider adds some 30 packages (aiohttp, lxml,
redshift-connector, pyathena, sagemaker-studio...) for what is here a handful of calls. The connection
is read (in :mod:`respaldo.hooks.s3`) the way that provider reads an ``aws`` connection (*Login* =
access key id, *Password* = secret access key, *Extra* ``endpoint_url`` and ``region_name``), so a later
switch to S3Hook keeps it.

Every object goes up as a multipart upload: it becomes visible only when the upload completes, so a
partial copy never carries the final name (a failed upload is aborted). Each part carries its SHA-256;
the store checks each part as it arrives and reports, once complete, the checksum of the part
checksums, which must equal the one computed here. A store that reports no checksum gets the object
read back and hashed. The whole artifact's sha256 also goes in the object's metadata (``sha256``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import uuid
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from respaldo.ciclo.externo.base import CHUNK, SIDECAR_SUFFIX, Destination, ExternalError, Placed, sidecar_text
from respaldo.ciclo.externo.config import ExternalS3

#: Size of each uploaded part (S3 allows at most 10,000 parts: 64 MiB parts reach 625 GiB). Memory: one part.
PART_BYTES = 64 * 1024 * 1024
MAX_PARTS = 10_000


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class S3Destination(Destination):
    """A bucket (and prefix) of an S3-compatible store."""

    kind = "s3"

    def __init__(self, config: ExternalS3):
        self.config = config
        self._client: Any = None
        self._where = ""
        self._secrets: list[str] = []

    def describe(self) -> str:
        return self.config.describe() + (f" en {self._where}" if self._where else "")

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        from respaldo.errors import RespaldoError
        from respaldo.hooks.s3 import s3_session

        try:
            session = s3_session(self.config.conn_id, self.config.describe())
        except RespaldoError as err:
            raise ExternalError(str(err)) from err
        self._where, self._secrets = session.where, session.secrets
        return session.client

    def _problem(self, err: BaseException, what: str) -> ExternalError:
        from botocore.exceptions import ClientError, EndpointConnectionError

        from respaldo.hooks.base import blank

        where = self.describe()
        if isinstance(err, ExternalError):
            return err
        if isinstance(err, ClientError):
            code = err.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket", "404", "NotFound"):
                reason = f"el bucket «{self.config.bucket}» no existe"
            elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthorizationHeaderMalformed"):
                reason = "el servidor rechazó la llave de acceso de la conexión (Login/Password)"
            elif code in ("403", "Forbidden"):  # a HEAD answer has no body to tell a bad key from a refusal
                reason = ("el servidor rechazó la llave de acceso de la conexión (Login/Password) o no le da permiso "
                          "sobre el bucket")
            elif code == "AccessDenied":
                reason = "acceso denegado: la llave de la conexión no tiene permiso para eso"
            elif code in ("EntityTooLarge", "QuotaExceeded", "XMinioStorageFull", "InsufficientStorage"):
                reason = "el almacenamiento está lleno o se agotó la cuota"
            elif code in ("BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest"):
                reason = "los datos llegaron distintos (la suma SHA-256 de una parte no coincide)"
            else:
                reason = f"{code}: {err.response.get('Error', {}).get('Message', '')}".strip(": ")
        elif isinstance(err, EndpointConnectionError):
            reason = "no se pudo conectar con el servidor"
        else:
            reason = f"{type(err).__name__}: {err}"
        return ExternalError(blank(f"{what} en {where}: {reason}.", self._secrets))

    def _key(self, relative: PurePosixPath) -> str:
        return f"{self.config.prefix.rstrip('/')}/{relative}" if self.config.prefix else str(relative)

    def uri_of(self, relative: PurePosixPath) -> str:
        return f"s3://{self.config.bucket}/{self._key(relative)}"

    def _key_of(self, uri: str) -> str:
        parts = urlsplit(uri)
        key = parts.path.lstrip("/")
        prefix = f"{self.config.prefix.rstrip('/')}/" if self.config.prefix else ""
        if parts.scheme != "s3" or parts.netloc != self.config.bucket or not key.startswith(prefix):
            raise ExternalError(f"«{uri}» no es una copia de {self.describe()}.")
        return key

    def _upload(self, key: str, source: Path | None, data: bytes | None, sha256: str) -> None:
        """One multipart upload with a SHA-256 per part; verified against the store's composite checksum."""
        client, bucket = self.client, self.config.bucket
        size = source.stat().st_size if source is not None else len(data or b"")
        part_bytes = max(PART_BYTES, -(-size // MAX_PARTS))
        upload = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256",
                                                Metadata={"sha256": sha256})
        upload_id = upload["UploadId"]
        parts, digests, whole = [], [], hashlib.sha256()
        try:
            with open(source, "rb") if source is not None else io.BytesIO(data or b"") as handle:
                number = 1
                while True:
                    block = handle.read(part_bytes)
                    if not block and number > 1:
                        break
                    whole.update(block)
                    digest = hashlib.sha256(block).digest()
                    answer = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                                Body=block, ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(digest))
                    parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": _b64(digest)})
                    digests.append(digest)
                    number += 1
                    if len(block) < part_bytes:
                        break
            # The bytes sent must be the registered artifact's: else the upload is aborted, never completed.
            self.refuse_mismatch(f"s3://{bucket}/{key}", sha256, whole.hexdigest())
            client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                             MultipartUpload={"Parts": parts})
        except BaseException:
            try:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the upload's own failure is what is reported
                pass
            raise
        head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
        reported = (head.get("ChecksumSHA256") or "").split("-")[0]
        expected = _b64(hashlib.sha256(b"".join(digests)).digest())
        if reported:
            if reported != expected:
                client.delete_object(Bucket=bucket, Key=key)
                raise ExternalError(f"La copia {key} en {self.describe()} no coincide con la local: el servidor "
                                    f"informa la suma SHA-256 de sus partes {reported}, se esperaba {expected}. "
                                    "Se borró del destino.")
        else:  # a store without checksums: read it back
            found = self._object_sha256(key)
            if found != sha256:
                client.delete_object(Bucket=bucket, Key=key)
                self.refuse_mismatch(key, sha256, found)

    def _object_sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        body = self.client.get_object(Bucket=self.config.bucket, Key=key)["Body"]
        for block in body.iter_chunks(CHUNK):
            digest.update(block)
        return digest.hexdigest()

    def put(self, artifact: Path, relative: PurePosixPath, sha256: str) -> Placed:
        key = self._key(relative)
        try:
            self._upload(key, artifact, None, sha256)
            text = sidecar_text(sha256, relative.name).encode()
            self._upload(key + SIDECAR_SUFFIX, None, text, hashlib.sha256(text).hexdigest())
        except Exception as err:
            raise self._problem(err, f"No se pudo copiar {artifact.name}") from err
        return Placed(self.uri_of(relative), sha256, dt.datetime.now(dt.UTC), artifact.stat().st_size)

    def exists(self, uri: str) -> bool:
        from botocore.exceptions import ClientError

        key = self._key_of(uri)
        try:
            self.client.head_object(Bucket=self.config.bucket, Key=key)
            return True
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._problem(err, f"No se pudo consultar {key}") from err
        except Exception as err:
            raise self._problem(err, f"No se pudo consultar {key}") from err

    def sha256(self, uri: str) -> str:
        key = self._key_of(uri)
        try:
            return self._object_sha256(key)
        except Exception as err:
            raise self._problem(err, f"No se pudo leer {key}") from err

    def delete(self, uri: str) -> None:
        key = self._key_of(uri)
        try:
            self.client.delete_objects(Bucket=self.config.bucket, Delete={
                "Objects": [{"Key": key}, {"Key": key + SIDECAR_SUFFIX}], "Quiet": True})
        except Exception as err:
            raise self._problem(err, f"No se pudo borrar {key}") from err

    def check(self) -> str:
        probe = self._key(PurePosixPath(f".respaldo-prueba-{uuid.uuid4().hex[:8]}"))
        try:
            self.client.head_bucket(Bucket=self.config.bucket)
            self.client.put_object(Bucket=self.config.bucket, Key=probe, Body=b"respaldo\n")
            self.client.delete_object(Bucket=self.config.bucket, Key=probe)
        except Exception as err:
            raise self._problem(err, "No se pudo escribir una prueba") from err
        return f"{self.describe()}: responde, la llave sirve y se puede escribir"
