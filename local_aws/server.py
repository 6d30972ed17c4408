"""The twin as a process: one per workspace, started in the background on demand (or in the foreground by
`genaiops sagemaker-api`), found through `<workspace>/sagemaker/server.json`, and stopped as a whole.

Stopping it (SIGTERM or SIGINT) stops every endpoint process it started; starting it again serves every endpoint as
SageMaker would find it: InService endpoints come back serving, an update cut short is rolled back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from local_aws.cloud import CloudKind
from local_aws.control_plane import ControlPlane
from local_aws.endpoint import atomic_write
from local_aws.endpoints import LocalEndpoints

log = logging.getLogger("local_aws.server")


def server_file(workspace: Path) -> Path:
    return workspace.resolve() / "sagemaker" / "server.json"


def running_url(workspace: Path) -> str | None:
    """The URL of the workspace's twin if one answers, else None."""
    import urllib.request

    path = server_file(workspace)
    if not path.exists():
        return None
    try:
        url = str(json.loads(path.read_text())["url"])
        with urllib.request.urlopen(f"{url}/_genaiops/health", timeout=5) as response:
            return url if response.status == 200 else None
    except (OSError, ValueError, KeyError):
        return None


def serve(workspace: Path, *, host: str = "127.0.0.1", port: int = 0, region: str = "us-east-1",
          cloud: CloudKind = "local", ready: Callable[[str], None] | None = None) -> int:
    """Run the workspace's twin until SIGTERM or SIGINT (one per workspace: a lock says so), then stop its
    endpoints."""
    import fcntl

    from local_aws.sagemaker_api import serve_api

    plane = ControlPlane(workspace, region=region, cloud=cloud)
    plane.root.mkdir(parents=True, exist_ok=True)
    lock = (plane.root / "server.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(f"a local SageMaker control plane already runs for {plane.workspace} at "
                           f"{running_url(workspace)}") from None
    server = serve_api(plane.call, host, port, runtime=plane.runtime.invoke)
    bound_host, bound_port = server.server_address[:2]
    url = f"http://{bound_host}:{bound_port}"

    def stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    recovered = plane.recovery.recover()
    if recovered:
        log.warning("endpoints found as they were left, serving again or recovered: %s", ", ".join(recovered))
    atomic_write(server_file(workspace), json.dumps({"url": url, "pid": os.getpid(), "cloud": cloud}))
    if ready is not None:
        ready(url)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        for signum in previous:  # a second signal must not cut the endpoints' stop short
            signal.signal(signum, signal.SIG_IGN)
        stopped = plane.recovery.stop_all()
        if stopped:
            log.info("stopped the endpoints %s; they serve again when the control plane starts", ", ".join(stopped))
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            if json.loads(server_file(workspace).read_text())["pid"] == os.getpid():
                server_file(workspace).unlink()
        lock.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def ensure(workspace: Path, *, region: str = "us-east-1", cloud: CloudKind = "local", timeout: float = 120.0) -> str:
    """The URL of the workspace's twin, started in the background if none runs.

    It outlives the command that started it, as its endpoints do; `genaiops sagemaker-api --stop` (`stop`) stops
    it with them."""
    url = running_url(workspace)
    if url is not None:
        return url
    root = workspace.resolve() / "sagemaker"
    root.mkdir(parents=True, exist_ok=True)
    with (root / "server.log").open("ab") as logfile:
        process = subprocess.Popen([sys.executable, "-m", "local_aws", "--workspace", str(workspace), "--region", region,
                                    "--cloud", cloud], stdout=logfile, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, env=os.environ.copy())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        url = running_url(workspace)
        if url is not None:
            return url
        if process.poll() is not None:
            url = running_url(workspace)  # another shell's control plane won the lock
            if url is not None:
                return url
            tail = (root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the local SageMaker control plane exited with code {process.returncode}:\n{tail}")
        time.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"the local SageMaker control plane did not start within {timeout:.0f} s; see {root / 'server.log'}")


def stop(workspace: Path, timeout: float = 300.0) -> list[str]:
    """Stop the workspace's twin and every endpoint process it started (also those a killed control plane left);
    returns what it stopped."""
    stopped: list[str] = []
    try:
        pid: int | None = int(json.loads(server_file(workspace).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        pid = None
    if pid is not None and _alive(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        stopped.append(f"the local SageMaker control plane (pid {pid})")
    endpoints = LocalEndpoints(workspace.resolve())
    for name in endpoints.store.names():
        if endpoints.running(name):
            endpoints.stop(name)
            stopped.append(f"endpoint {name}")
    return stopped


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def client(workspace: Path, *, service: str = "sagemaker", region: str = "us-east-1", endpoint_url: str | None = None,
           cloud: CloudKind = "local", config: Any = None) -> Any:
    """A boto3 client (`sagemaker` or `sagemaker-runtime`) of the twin at `endpoint_url`, else of the workspace's,
    started on demand."""
    import boto3
    from botocore.config import Config

    url = endpoint_url or ensure(workspace, region=region, cloud=cloud)
    return boto3.client(service, endpoint_url=url, region_name=region, aws_access_key_id="local",
                        aws_secret_access_key="local",
                        config=Config(retries={"max_attempts": 2, "mode": "standard"}, read_timeout=900).merge(
                            config or Config()))


def main(argv: list[str] | None = None) -> None:
    import argparse

    from steps.offline import go_offline

    parser = argparse.ArgumentParser(prog="python -m local_aws",
                                     description="Run the local SageMaker control plane of a workspace.")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    parser.add_argument("--cloud", choices=["local", "aws"], default="local",
                        help="where endpoints send metrics and alarms live: the workspace, or CloudWatch")
    args = parser.parse_args(argv)
    go_offline()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(serve(args.workspace, host=args.host, port=args.port, region=args.region, cloud=args.cloud,
                   ready=lambda url: log.info("the local SageMaker control plane listens on %s", url)))
