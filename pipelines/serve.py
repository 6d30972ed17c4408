"""What `genaiops serve` runs: a Prefect server on 127.0.0.1 with its SQLite database in the workspace, and one
process serving the deployments of `prefect.yaml` (their schedules, and the runs triggers start). Each runs in
its own process group, so stopping it stops every flow run it started too."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from pipelines.auth_server import wait_http
from pipelines.deployments import DeploymentSpec
from pipelines.processes import shielded, stop_group

QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_UI_ENABLED": "true"}


class ServeError(RuntimeError):
    """The Prefect server or the deployments' process did not come up; the message carries its log."""


def prefect_env(home: Path, api_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of the server, the runner and every flow run they start."""
    return {**os.environ, **QUIET, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url, **(extra or {})}


@contextmanager
def _process(command: list[str], env: Mapping[str, str], log: Path | None) -> Iterator[subprocess.Popen[bytes]]:
    out = log.open("ab") if log is not None else None
    try:
        process = subprocess.Popen(command, env=dict(env), stdout=out, stderr=subprocess.STDOUT if out else None,
                                   start_new_session=True)
    finally:
        if out is not None:
            out.close()
    try:
        yield process
    finally:
        with shielded():  # a second Ctrl-C must not cut the clean-up short
            stop_group(process)


def wait_registered(api_url: str, specs: list[DeploymentSpec], runner: subprocess.Popen[bytes], timeout: float,
                    log: Path | None = None) -> list[Any]:
    """Until the server lists every deployment of `specs`; fails at once if the runner exits."""
    from prefect.client.orchestration import SyncPrefectClient

    wanted = {s.full_name for s in specs}
    deadline = time.monotonic() + timeout
    with SyncPrefectClient(api_url) as client:
        while True:
            if runner.poll() is not None:
                tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
                raise ServeError(f"the deployments' process exited with {runner.returncode}\n{tail}")
            found = {f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()}
            if wanted <= set(found):
                return [found[name] for name in sorted(wanted)]
            if time.monotonic() > deadline:
                raise ServeError(f"after {timeout:.0f} s the server lists {sorted(found)}, not {sorted(wanted)}")
            time.sleep(0.5)


@contextmanager
def serving(home: Path, port: int, prefect_yaml: Path, specs: list[DeploymentSpec], *,
            extra_env: Mapping[str, str] | None = None, timeout: float = 300,
            runner_log: Path | None = None) -> Iterator[tuple[str, list[Any], list[subprocess.Popen[bytes]]]]:
    """Start the server and the runner; yield the UI URL, the registered deployments and both processes. Both
    process groups are stopped when the block ends, however it ends."""
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    env = prefect_env(home, f"{url}/api", extra_env)
    server_log = home / "server.log"
    with ExitStack() as stack:
        server = stack.enter_context(_process(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env, server_log))
        try:
            wait_http(f"{url}/api/health", server, timeout=timeout, log=server_log)
        except (RuntimeError, TimeoutError) as exc:
            raise ServeError(f"the Prefect server did not start: {exc}") from exc
        runner = stack.enter_context(_process([sys.executable, "-m", "pipelines.deployments", str(prefect_yaml)],
                                              env, runner_log))
        registered = wait_registered(f"{url}/api", specs, runner, timeout, runner_log)
        yield url, registered, [runner, server]
