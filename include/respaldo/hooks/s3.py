"""S3-compatible stores: a boto3 client from an Airflow connection read the way the amazon provider reads ``aws``.

*Login* is the access key id, *Password* the secret access key, *Extra* ``endpoint_url`` (for a store
that is not AWS: MinIO, Ceph, Wasabi...), ``region_name`` and optionally ``addressing_style``
(``path``, the default here, or ``virtual``). boto3 is imported here, only when a task needs it.
"""

from __future__ import annotations

from respaldo.errors import RespaldoError
from respaldo.hooks.base import ClientSession, connection_problem


class S3Session(ClientSession):
    """boto3's S3 client for one connection; ``where`` is the endpoint."""


def s3_session(conn_id: str, what: str) -> S3Session:
    """The client of ``conn_id``; ``what`` names its use in errors (:class:`RespaldoError`, one sentence)."""
    import boto3
    from airflow.sdk import BaseHook
    from botocore.config import Config

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as err:
        raise RespaldoError(connection_problem(conn_id, err)) from err
    extra = conn.extra_dejson or {}
    endpoint = extra.get("endpoint_url") or (f"{conn.schema or 'https'}://{conn.host}" + (
        f":{conn.port}" if conn.port else "") if conn.host else None)
    if not conn.login or not conn.password:
        raise RespaldoError(f"La conexión «{conn_id}» ({what}) no trae la llave de acceso: ponga el access key id "
                            "en Login y la secret access key en Password.")
    config = Config(connect_timeout=20, read_timeout=120, retries={"max_attempts": 3, "mode": "standard"},
                    # Checksums are sent explicitly (SHA-256 per part); S3-compatible stores may refuse
                    # boto3's default CRC headers.
                    request_checksum_calculation="when_required", response_checksum_validation="when_required",
                    s3={"addressing_style": extra.get("addressing_style", "path")})
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=conn.login,
                          aws_secret_access_key=conn.password, region_name=extra.get("region_name") or "us-east-1",
                          config=config)
    return S3Session(conn_id=conn_id, where=endpoint or "AWS S3", client=client, secrets=[conn.password])
