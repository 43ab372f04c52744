"""Connections: the one place respaldo reads Airflow connections and hands their secrets to tools.

Built on the providers' own hooks (PostgresHook, MySqlHook, SSHHook, SFTPHook), so their reading of a
connection and its extras is the one in force. Each tool gets a
:class:`~respaldo.hooks.base.ToolSession`: a private 0700 folder with its 0600 secret files (removed
when the session ends), a minimal environment (nothing of the worker's: no ``AIRFLOW_*``, no other
connection) and the blanking of its secrets for every error it may report.

- :mod:`.base`: :class:`ToolSession`, :func:`blank`, :func:`minimal_env`, :func:`private_dir`.
- :mod:`.postgres`: :func:`~.postgres.libpq_session` (pg_dump, psql; SSL extras honoured).
- :mod:`.mysql`: :func:`~.mysql.client_session` (mariadb, mariadb-dump; ssl and unix_socket honoured).
- :mod:`.ssh`: :func:`~.ssh.openssh_session` (OpenSSH: ssh, and sftp through ``SshSession.sftp_argv``) and
  :func:`~.ssh.sftp_session` (intake folders), both refused unless the server's key is verified.
- :mod:`.s3`: :func:`~.s3.s3_session` (boto3, for the external copy to S3-compatible stores).

Providers are imported inside the functions: the DAG file imports the sources, which import these
modules, and its parse time must not pay for paramiko or the database drivers.
"""

from respaldo.hooks.base import MASK, ToolSession, blank, minimal_env, private_dir, write_private

__all__ = ["MASK", "ToolSession", "blank", "minimal_env", "private_dir", "write_private"]
