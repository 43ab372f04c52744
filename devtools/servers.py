"""Real servers on loopback for the tests, the demo and the benchmark.

A throwaway PostgreSQL cluster (password authentication, its own port), and an SMTP server that keeps
what it receives. Nothing here is a mock: each is the real program on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def stop_process(process: subprocess.Popen | None, timeout: float) -> None:
    """Ask a server to stop; kill it if it has not within ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass(frozen=True)
class Tls:
    """A certificate authority and a server certificate it signed, as PEM files."""

    ca: Path
    cert: Path
    key: Path


def make_ca(directory: Path, name: str = "respaldo CA de prueba") -> tuple[Path, Path]:
    """A self-signed certificate authority made with openssl; returns (certificate, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.crt", directory / "ca.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
                   check=True, capture_output=True)
    return cert, key


def make_tls(directory: Path, san: str = "IP:127.0.0.1") -> Tls:
    """A CA and a server certificate for ``san`` (subjectAltName) signed by it, in ``directory``."""
    ca, ca_key = make_ca(directory)
    cert, key, request = directory / "server.crt", directory / "server.key", directory / "server.csr"
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(request), "-subj", "/CN=respaldo servidor de prueba"],
                   check=True, capture_output=True)
    extensions = directory / "server.ext"
    extensions.write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth\n")
    subprocess.run(["openssl", "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
                    "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions)],
                   check=True, capture_output=True)
    key.chmod(0o600)
    return Tls(ca=ca, cert=cert, key=key)


def _as_postgres(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a PostgreSQL server binary as the ``postgres`` user (the server refuses to run as root)."""
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of its own: superuser ``postgres`` with a password, scram auth only.

    With ``ssl`` it serves TLS with a certificate for 127.0.0.1 signed by a CA of its own (``tls.ca``)
    and accepts TCP connections over TLS only.
    """

    password: str = "clave-superusuario-9Xq"
    port: int = 0
    ssl: bool = False
    datadir: Path | None = None
    process: subprocess.Popen | None = None
    tls: Tls | None = None
    _tmp: Path | None = field(default=None, repr=False)

    def start(self) -> PostgresServer:
        self._tmp = Path(tempfile.mkdtemp(prefix="respaldo-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self._tmp, user.pw_uid, user.pw_gid)
        self.datadir = self._tmp / "data"
        pwfile = self._tmp / "pw"
        pwfile.write_text(self.password)
        if os.geteuid() == 0:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth=scram-sha-256",
                      f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8"])
        pwfile.unlink()
        self.port = self.port or free_port()
        return self._launch()

    def resume(self) -> PostgresServer:
        """Start again, on the same port and data, a server stopped with :meth:`stop`."""
        return self._launch()

    def _launch(self) -> PostgresServer:
        argv = [str(PG_BIN / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self._tmp}",
                "-c", "fsync=off", "-c", "max_connections=100"]
        if self.ssl:
            self.tls = make_tls(self._tmp / "tls")
            if os.geteuid() == 0:
                os.chown(self.tls.key, pwd.getpwnam("postgres").pw_uid, -1)
            (self.datadir / "pg_hba.conf").write_text(
                "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n")
            argv += ["-c", "ssl=on", "-c", f"ssl_cert_file={self.tls.cert}", "-c", f"ssl_key_file={self.tls.key}"]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        # Its own session: a terminal's Ctrl-C reaches whoever started it, who stops it in order.
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        wait_for_port(self.port)
        deadline = time.monotonic() + 30
        while self.psql("select 1", check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise TimeoutError("throwaway PostgreSQL did not accept connections")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        stop_process(self.process, timeout=20)

    def cleanup(self) -> None:
        self.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def env(self, user: str = "postgres", password: str | None = None, database: str = "postgres") -> dict:
        return {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(self.port), "PGUSER": user,
                "PGPASSWORD": password if password is not None else self.password, "PGDATABASE": database}

    def psql(self, sql: str, database: str = "postgres", check: bool = True,
             **env_kwargs) -> subprocess.CompletedProcess:
        proc = subprocess.run(["psql", "-XAtq", "-v", "ON_ERROR_STOP=1"], input=sql,
                              env=self.env(database=database, **env_kwargs), capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"psql failed on {database}: {proc.stderr.strip()}")
        return proc

    def create_backup_role(self, name: str, password: str) -> None:
        """A role with the least privileges a backup needs: log in and read everything."""
        self.psql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}' IN ROLE pg_read_all_data")

    def connection_uri(self, user: str, password: str, database: str) -> str:
        from urllib.parse import quote

        return f"postgres://{quote(user)}:{quote(password, safe='')}@127.0.0.1:{self.port}/{database}"


@contextlib.contextmanager
def postgres_server(**kwargs) -> Generator[PostgresServer, None, None]:
    server = PostgresServer(**kwargs).start()
    try:
        yield server
    finally:
        server.cleanup()


@dataclass
class SmtpServer:
    """A real SMTP server (aiosmtpd) on loopback that keeps every message it accepts."""

    port: int = 0
    messages: list[EmailMessage] = field(default_factory=list)
    _controller: object = None

    def start(self) -> SmtpServer:
        from aiosmtpd.controller import Controller

        server = self

        class Handler:
            async def handle_DATA(self, smtp, session, envelope):  # noqa: N802 - aiosmtpd's name
                message = message_from_bytes(envelope.content, policy=policy.default)
                message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
                server.messages.append(message)
                return "250 OK"

        self.port = self.port or free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

    def wait_for(self, predicate, timeout: float = 60.0) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in list(self.messages):
                if predicate(message):
                    return message
            time.sleep(0.2)
        subjects = [m["Subject"] for m in self.messages]
        raise AssertionError(f"no matching email within {timeout:.0f} s; received: {subjects}")

    def connection_json(self, from_email: str = "respaldo@example.gov.co") -> str:
        import json

        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                           "extra": {"disable_ssl": True, "disable_tls": True, "from_email": from_email}})


@dataclass
class RedisServer:
    """A real Redis on loopback (the Celery broker), in memory only: no RDB snapshot, no append-only file."""

    port: int = 0
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", tempfile.gettempdir()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        stop_process(self.process, 10)


@contextlib.contextmanager
def redis_server() -> Generator[RedisServer, None, None]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


SSH_TEST_USER = "respaldo_prueba"


@dataclass
class SshServer:
    """OpenSSH's sshd on loopback with its own host key, for one local account.

    The account (``respaldo_prueba``) is created if missing and unlocked; it logs in with the key made
    here, or with ``password``. Runs as root (sshd needs it to switch to the account).
    """

    password: str = "Clave-SSH:prueba/2026"
    user: str = SSH_TEST_USER
    port: int = 0
    process: subprocess.Popen | None = None
    dir: Path | None = None

    def start(self) -> SshServer:
        self.dir = Path(tempfile.mkdtemp(prefix="respaldo-sshd-"))
        os.chmod(self.dir, 0o755)
        Path("/run/sshd").mkdir(exist_ok=True)
        try:
            pwd.getpwnam(self.user)
        except KeyError:
            subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", self.user], check=True)
        subprocess.run(["chpasswd"], input=f"{self.user}:{self.password}", text=True, check=True)
        for name in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"respaldo-{name}",
                            "-f", str(self.dir / name)], check=True)
        (self.dir / "authorized_keys").write_text((self.dir / "client.pub").read_text())
        os.chmod(self.dir / "authorized_keys", 0o644)
        self.port = self.port or free_port()
        config = self.dir / "sshd_config"
        config.write_text(f"""
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.dir / 'host'}
PidFile {self.dir / 'sshd.pid'}
AuthorizedKeysFile {self.dir / 'authorized_keys'}
StrictModes no
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers {self.user}
Subsystem sftp internal-sftp
MaxStartups 100
LogLevel VERBOSE
""")
        with open(self.dir / "sshd.log", "wb") as log:
            self.process = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stderr=log)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        stop_process(self.process, timeout=20)

    def cleanup(self) -> None:
        self.stop()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def host_key(self) -> str:
        """The server's public key as ``ssh-ed25519 AAAA...`` (what the connection's host_key holds)."""
        kind, key, *_ = (self.dir / "host.pub").read_text().split()
        return f"{kind} {key}"

    @property
    def private_key(self) -> str:
        return (self.dir / "client").read_text()

    def connection_json(self, *, key: bool = True, password: str | None = None, host_key: str | None = None,
                        port: int | None = None) -> str:
        import json

        extra = {"host_key": host_key or self.host_key}
        if key:
            extra["private_key"] = self.private_key
        connection = {"conn_type": "ssh", "host": "127.0.0.1", "port": port or self.port, "login": self.user,
                      "extra": extra}
        if password is not None:
            connection["password"] = password
        return json.dumps(connection)

    def session_pids(self) -> list[int]:
        """PIDs of the sshd processes serving a session of the test account right now."""
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(f"sshd: {self.user}".encode()):
                found.append(int(pid))
        return found


def _sql_string(value: str) -> str:
    """A MariaDB string literal (default sql_mode: backslash escapes are on)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class MariaDBServer:
    """A MariaDB server of its own from the installed binaries: TCP on loopback, admin over its socket.

    The administrator (``root``, or the OS user running this when not root) logs in only through the
    Unix socket; every other account
    is made with a password and reaches the server over TCP, as a remote backup user would. With
    ``ssl`` it also serves TLS with a certificate for 127.0.0.1 signed by a CA of its own.
    """

    port: int = 0
    ssl: bool = False
    datadir: Path | None = None
    socket: Path | None = None
    admin: str = "root"
    process: subprocess.Popen | None = None
    tls: Tls | None = None
    _tmp: Path | None = field(default=None, repr=False)

    def start(self) -> MariaDBServer:
        self._tmp = Path(tempfile.mkdtemp(prefix="respaldo-mariadb-"))
        as_root = os.geteuid() == 0
        if as_root:  # mariadbd refuses to run as root; it switches to the mysql user itself
            user = pwd.getpwnam("mysql")
            os.chown(self._tmp, user.pw_uid, user.pw_gid)
        self.datadir = self._tmp / "data"
        self.socket = self._tmp / "mariadb.sock"
        account = ["--user=mysql"] if as_root else []
        # root@localhost logs in by socket as the OS root; another OS user gets an admin account of its name
        self.admin = pwd.getpwuid(os.geteuid()).pw_name
        admin = [] if as_root else [f"--auth-root-socket-user={self.admin}"]
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.datadir}", *account,
                        "--auth-root-authentication-method=socket", *admin, "--skip-test-db", "--skip-name-resolve"],
                       check=True, capture_output=True, text=True)
        self.port = self.port or free_port()
        argv = ["mariadbd", "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
                "--bind-address=127.0.0.1", f"--socket={self.socket}", f"--pid-file={self._tmp / 'mariadb.pid'}",
                f"--log-error={self._tmp / 'error.log'}", *account, "--skip-name-resolve",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_unicode_ci",
                "--innodb-buffer-pool-size=128M", "--innodb-flush-log-at-trx-commit=0", "--max-connections=100"]
        if self.ssl:  # TLS with a certificate for 127.0.0.1 from a CA of its own (tls.ca)
            self.tls = make_tls(self._tmp / "tls")
            if as_root:
                os.chown(self.tls.key, pwd.getpwnam("mysql").pw_uid, -1)
            argv += [f"--ssl-ca={self.tls.ca}", f"--ssl-cert={self.tls.cert}", f"--ssl-key={self.tls.key}"]
        # Its own session: a terminal's Ctrl-C reaches whoever started it, who stops it in order.
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        wait_for_port(self.port)
        deadline = time.monotonic() + 30
        while self.sql("SELECT 1", check=False).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                log = (self._tmp / "error.log").read_text(errors="replace")[-2000:]
                raise TimeoutError(f"throwaway MariaDB did not accept connections:\n{log}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        stop_process(self.process, timeout=30)

    def cleanup(self) -> None:
        self.stop()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def client_argv(self, database: str | None = None) -> list[str]:
        """``mariadb`` logged in as the administrator through the socket (for restores and checks)."""
        argv = ["mariadb", "--no-defaults", f"--socket={self.socket}", f"--user={self.admin}",
                "--default-character-set=utf8mb4", "--batch", "--skip-column-names"]
        return [*argv, database] if database else argv

    def sql(self, text: str, database: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.client_argv(database), input=text, capture_output=True, text=True)
        if check and proc.returncode != 0:
            raise RuntimeError(f"mariadb failed on {database or '(no database)'}: {proc.stderr.strip()}")
        return proc

    def create_backup_role(self, name: str, password: str, database: str | None = None) -> None:
        """An account with the least privileges a complete, consistent dump needs (see sources/mysql.py).

        SELECT, SHOW VIEW, TRIGGER and EVENT on the database (all databases when ``database`` is
        None), and SELECT on ``mysql.proc`` so mariadb-dump can read routine bodies on MariaDB < 11.3.
        """
        scope = f"`{database.replace('`', '``')}`.*" if database else "*.*"
        account = f"{_sql_string(name)}@'%'"
        self.sql(f"CREATE USER {account} IDENTIFIED BY {_sql_string(password)};\n"
                 f"GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON {scope} TO {account};\n"
                 f"GRANT SELECT ON mysql.proc TO {account};\n")

    def connection_json(self, user: str, password: str, database: str) -> str:
        """An Airflow connection (``AIRFLOW_CONN_...``) of type mysql to this server over TCP."""
        import json

        return json.dumps({"conn_type": "mysql", "host": "127.0.0.1", "port": self.port, "login": user,
                           "password": password, "schema": database})

    def table_checksums(self, database: str) -> dict[str, tuple[int, int]]:
        """Every base table's row count and ``CHECKSUM TABLE`` (computed over the rows' contents)."""
        names = self.sql("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = "
                         f"{_sql_string(database)} AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME").stdout.split()
        found = {}
        for table in names:
            count = int(self.sql(f"SELECT COUNT(*) FROM `{table}`", database).stdout)
            checksum = int(self.sql(f"CHECKSUM TABLE `{table}` EXTENDED", database).stdout.split("\t")[1])
            found[table] = (count, checksum)
        return found


@contextlib.contextmanager
def mariadb_server(**kwargs) -> Generator[MariaDBServer, None, None]:
    server = MariaDBServer(**kwargs).start()
    try:
        yield server
    finally:
        server.cleanup()


@dataclass
class S3Server:
    """moto's S3-compatible server on loopback (server mode: real HTTP, real signatures) with one bucket.

    Authentication is on: the first few unauthenticated calls create an IAM user and its access key
    (``access_key``, ``secret_key``) and the bucket; every later call must be signed with that key.
    """

    bucket: str = "copias-externas"
    port: int = 0
    access_key: str = ""
    secret_key: str = ""
    process: subprocess.Popen | None = None
    dir: Path | None = None

    #: Calls made before authentication is enforced: create_user, put_user_policy, create_access_key.
    SETUP_CALLS = 3

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        import json
        import sys

        import boto3

        self.dir = Path(tempfile.mkdtemp(prefix="respaldo-s3-"))
        self.port = self.port or free_port()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir),
               "INITIAL_NO_AUTH_ACTION_COUNT": str(self.SETUP_CALLS)}
        server = Path(sys.executable).with_name("moto_server")
        with open(self.dir / "moto.log", "wb") as log:
            self.process = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(self.port)], env=env,
                                            stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port)
        anonymous = {"endpoint_url": self.endpoint, "region_name": "us-east-1", "aws_access_key_id": "inicial",
                     "aws_secret_access_key": "inicial"}
        iam = boto3.client("iam", **anonymous)
        iam.create_user(UserName="respaldo")
        iam.put_user_policy(UserName="respaldo", PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="respaldo")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        self.client().create_bucket(Bucket=self.bucket)
        return self

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def connection_json(self, *, secret: str | None = None, endpoint: str | None = None) -> str:
        import json

        return json.dumps({"conn_type": "aws", "login": self.access_key, "password": secret or self.secret_key,
                           "extra": {"endpoint_url": endpoint or self.endpoint, "region_name": "us-east-1"}})

    def stop(self) -> None:
        stop_process(self.process, timeout=20)

    def cleanup(self) -> None:
        self.stop()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
