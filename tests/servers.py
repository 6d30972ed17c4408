"""Real local servers for tests: started on 127.0.0.1, waited for, and always stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_http(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first), or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


@contextmanager
def mlflow_server(folder: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`mlflow server` over a fresh SQLite store in `folder`; yields its base URL."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "server.log"
    command = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--default-artifact-root", (folder / "artifacts").as_uri(), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1", *extra]
    full_env = {**os.environ, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]), **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", process, timeout=120, log=log)
        yield url
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a server and every worker it forked."""
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@contextmanager
def approval_server(workspace: Path, approval: object | None = None,
                    audit: dict[str, str] | None = None) -> Iterator[tuple[str, dict[str, str]]]:
    """`mlflow server --app-name genaiops-auth` over `workspace`'s store, set up as `genaiops ui` does;
    yields its URL and the users' passwords. The audit log goes to `audit` (default: the workspace's store)."""
    import json

    from model_registry.approval import ApprovalConfig
    from model_registry.auth_setup import prepare, server_command

    config = approval if isinstance(approval, ApprovalConfig) else ApprovalConfig()
    store = f"sqlite:///{workspace / 'mlflow.db'}"
    server = prepare(workspace / "auth", approval=config, passwords={},
                     audit=audit or {"kind": "local", "root": str(workspace / "artifacts")})
    passwords = json.loads(Path(server.passwords_file).read_text())
    port = free_port()
    log = workspace / "auth" / "server.log"
    command = server_command(str(BIN / "mlflow"), backend_store_uri=store,
                             artifact_root=(workspace / "mlartifacts").as_uri(), port=port)
    env = {**os.environ, **server.env, "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")])}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", process, timeout=120, log=log)
        yield url, passwords
    finally:
        stop(process)
