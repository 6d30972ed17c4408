"""The approval server (`mlflow server --app-name genaiops-auth`) run for the length of a `with` block: on
127.0.0.1, in its own process group, stopped with every worker it forked when the block ends, however it ends."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from model_registry.alb_identity import AlbIdentityConfig
from model_registry.approval import ApprovalConfig
from model_registry.auth_setup import prepare, server_command, server_env
from pipelines.processes import stop_group

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    """Until `url` answers 200; fails at once if the server exits, and after `timeout` seconds if it never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextmanager
def auth_server(folder: Path, *, approval: ApprovalConfig, tracking_uri: str, artifact_root: str,
                audit: Mapping[str, Any], passwords: Mapping[str, str] | None = None,
                identity: AlbIdentityConfig | None = None, timeout: float = 300) -> Iterator[tuple[str, dict[str, str]]]:
    """Set up the auth folder as `genaiops ui` does, start the server on a free port, and yield its URL and the
    accounts' passwords. `tracking_uri` is its backend store (SQLite or PostgreSQL); with `identity`, people sign
    in through the load balancer that signs `x-amzn-oidc-data`, as on AWS."""
    server = prepare(folder, approval=approval, audit=dict(audit), passwords=dict(passwords or {}),
                     backend_store_uri=tracking_uri, identity=identity)
    chosen = json.loads(Path(server.passwords_file).read_text())
    port = free_port()
    log = folder / "server.log"
    command = server_command(str(BIN / "mlflow"), artifact_root=artifact_root, port=port)
    env = {**os.environ, **server_env(server, tracking_uri), "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", process, timeout=timeout, log=log)
        yield url, chosen
    finally:
        stop_group(process)
