"""A real PostgreSQL for the tests that need one: Debian's server binaries (the Makefile installs them where they
are missing), a cluster of its own in a temporary folder, listening on 127.0.0.1 only with password (SCRAM)
authentication, stopped and removed when the block ends. Run as the `postgres` user when the tests run as root,
since the server refuses to run as root."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from glob import glob
from pathlib import Path
from typing import Any

from pipelines.auth_server import free_port

USER = "genaiops"
PASSWORD = "pg-s3cret%with:odd@chars"  # percent, colon and at: the URI and the auth config must both escape it


def binaries() -> Path:
    """The folder of initdb and postgres: on PATH, or Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        raise RuntimeError("PostgreSQL's server is not installed: `make test` installs Debian's postgresql package")
    return Path(versions[-1]).parent


@contextmanager
def postgres(database: str = "mlflow") -> Iterator[str]:
    """A running server with `database` created; yields its SQLAlchemy URI (the password percent-encoded)."""
    bindir = binaries()
    folder = Path(tempfile.mkdtemp(prefix="genaiops-pg-"))
    as_root = os.geteuid() == 0
    user = "postgres" if as_root else None
    if as_root:
        shutil.chown(folder, "postgres", "postgres")
    (folder / "pw").write_text(PASSWORD)
    if as_root:
        shutil.chown(folder / "pw", "postgres", "postgres")
    log = folder / "server.log"
    subprocess.run([str(bindir / "initdb"), "-D", str(folder / "data"), "-U", USER, "--auth=scram-sha-256",
                    f"--pwfile={folder / 'pw'}", "-E", "UTF8", "--no-sync"], user=user, check=True,
                   capture_output=True, timeout=300)
    port = free_port()
    with log.open("wb") as out:
        if as_root:
            shutil.chown(log, "postgres", "postgres")
        process = subprocess.Popen(
            [str(bindir / "postgres"), "-D", str(folder / "data"), "-p", str(port), "-k", str(folder),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off"], user=user, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        connection = _connect(process, port, log)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
        connection.close()
        yield f"postgresql://{USER}:{urllib.parse.quote(PASSWORD, safe='')}@127.0.0.1:{port}/{database}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # fast shutdown: clients disconnected, the cluster closed cleanly
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def _connect(process: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 180) -> Any:
    """A connection once the server accepts one; fails at once if it exits."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return psycopg.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname="postgres",
                                   connect_timeout=5)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
