"""Real local servers for tests: started on 127.0.0.1, waited for, and always stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pipelines.auth_server import free_port, wait_http

BIN = Path(sys.executable).parent


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
    from model_registry.approval import ApprovalConfig
    from pipelines.auth_server import auth_server

    config = approval if isinstance(approval, ApprovalConfig) else ApprovalConfig()
    with auth_server(workspace / "auth", approval=config, tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}",
                     artifact_root=(workspace / "mlartifacts").as_uri(),
                     audit=audit or {"kind": "local", "root": str(workspace / "artifacts")}) as running:
        yield running


@contextmanager
def alb_approval_server(workspace: Path, approval: object, people: dict[str, dict[str, object]],
                        audit: dict[str, object] | None = None, database: str | None = None,
                        artifact_root: str | None = None) -> Iterator[dict[str, object]]:
    """The approval server as the approval stack runs it, on 127.0.0.1: its backend and user stores on a real
    PostgreSQL, people signing in through a proxy that plays the public load balancer (it signs
    `x-amzn-oidc-data` with a key this makes, and the server's key resolver is pointed at it), service accounts
    with basic auth straight to the server (the internal load balancer's door). Yields `url` (the server),
    `people_url` (the proxy), `passwords` (the service accounts'), `workspace`, `key` and `keys` (the endpoint).
    `database`: a PostgreSQL store already running (the flows' own), else one started here."""
    from model_registry.alb_identity import AlbIdentityConfig
    from pipelines.auth_server import auth_server
    from tests.alb import SIGNER, SigningKey, key_endpoint, signing_proxy
    from tests.postgres import postgres

    key = SigningKey("approvals-key-1")
    with ExitStack() as stack:
        database = database or stack.enter_context(postgres())
        keys = stack.enter_context(key_endpoint(key))
        identity = AlbIdentityConfig(signer=SIGNER, keys=keys.url)
        served = auth_server(workspace / "auth", approval=approval, tracking_uri=database,  # type: ignore[arg-type]
                             artifact_root=artifact_root or (workspace / "mlartifacts").as_uri(), identity=identity,
                             audit=audit or {"kind": "local", "root": str(workspace / "artifacts")})
        with served as (url, passwords), signing_proxy(url, key, people) as people_url:
            yield {"url": url, "people_url": people_url, "passwords": passwords, "workspace": workspace,
                   "key": key, "keys": keys, "people": people, "database": database}


def control_plane_state(root: Path) -> dict[str, list[str]]:
    """The endpoints, endpoint configs and models the workspace's local SageMaker control plane holds."""
    from local_aws.server import client

    return {"endpoints": [e["EndpointName"] for e in client(root).list_endpoints()["Endpoints"]],
            "configs": sorted(p.stem for p in (root / "sagemaker" / "endpoint-configs").glob("*.json")),
            "models": sorted(p.stem for p in (root / "sagemaker" / "models").glob("*.json"))}


def create_endpoint(root: Path, name: str, variants: list[dict[str, object]], *, capture: float = 100.0,
                    timeout_s: float = 60.0, max_batch_size: int = 8, shadow_share: float = 0.1) -> str:
    """An endpoint on the workspace's twin through SageMaker's API (the way `genaiops endpoints create` makes one),
    waited for until InService; returns the twin's URL, which answers SageMaker Runtime for every endpoint.
    Each variant: name, model (a folder or package), and weight, or shadow with sampling_percent."""
    from local_aws.server import client, running_url
    from serving import endpoints

    sagemaker = client(root)
    specs = [endpoints.VariantSpec(name=str(v["name"]), package_uri=Path(str(v["model"])).resolve().as_uri(),
                                   **{k: v[k] for k in ("weight", "shadow", "sampling_percent") if k in v})
             for v in variants]
    endpoints.create(sagemaker, name, specs, role_arn="arn:aws:iam::000000000000:role/local", instance_type="ml.m5.large",
                     capture_uri=(root / "capture").resolve().as_uri(), capture_percent=capture, timeout_s=timeout_s,
                     max_batch_size=max_batch_size, shadow_share=shadow_share)
    sagemaker.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 900})
    url = running_url(root)
    assert url is not None
    return url
