"""The local endpoints behind the control plane: create, change, stop, start again and delete them.

Each endpoint runs as one detached host process (`local_aws.router`) that owns its variant processes; its config
and observed state live in `<workspace>/endpoints/<name>/`. Only the control plane uses this module: everything
else reaches endpoints through SageMaker's API.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from local_aws.endpoint import EndpointConfig, EndpointState, EndpointStore


class LocalEndpointError(RuntimeError):
    """A local endpoint could not be created, changed or found."""


class LocalEndpoints:
    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.store = EndpointStore(workspace / "endpoints")

    def list(self) -> list[EndpointState]:
        states = []
        for name in self.store.names():
            state = self.describe(name)
            states.append(state)
        return states

    def describe(self, name: str) -> EndpointState:
        try:
            config = self.store.config(name)
        except KeyError as exc:
            raise LocalEndpointError(str(exc.args[0])) from None
        state = self.store.state(name)
        if state is None:
            return EndpointState(name=name, status="Creating")
        if state.host_pid and not _alive(state.host_pid) and state.status not in ("Failed",):
            return state.model_copy(update={"status": "Failed", "failure_reason":
                                            f"the endpoint host (pid {state.host_pid}) is not running; "
                                            f"see {self.store.folder(config.name) / 'host.log'}"})
        return state

    def create(self, config: EndpointConfig, *, timeout: float = 900,
               progress: Callable[[EndpointState], None] | None = None) -> EndpointState:
        """Start the endpoint and wait until it is InService; on failure nothing is left behind."""
        folder = self.store.folder(config.name)
        if (folder / "config.json").exists():
            existing = self.describe(config.name)
            if existing.status != "Failed":
                raise LocalEndpointError(f"endpoint {config.name} already exists ({existing.status}); delete it first")
            self.delete(config.name)
        for variant in config.variants:
            _check_model(variant.model)
        self.store.write_config(config)
        return self._launch(config, timeout, progress, keep=False)

    def running(self, name: str) -> bool:
        """Whether the endpoint's host process runs."""
        state = self.store.state(name)
        return state is not None and state.host_pid is not None and _alive(state.host_pid) and \
            state.status not in ("Failed", "Deleting")

    def start(self, name: str, *, timeout: float = 900) -> EndpointState:
        """Start a stopped endpoint again from its config (its models, weights, fleets and capture as they were)."""
        try:
            config = self.store.config(name)
        except KeyError as exc:
            raise LocalEndpointError(str(exc.args[0])) from None
        if self.running(name):
            return self.describe(name)
        (self.store.folder(name) / "state.json").unlink(missing_ok=True)
        return self._launch(config, timeout, None, keep=True)

    def stop(self, name: str) -> None:
        """Stop the endpoint's processes and keep its config, so that `start` serves it again."""
        self._terminate(name, None)
        (self.store.folder(name) / "state.json").unlink(missing_ok=True)

    def _launch(self, config: EndpointConfig, timeout: float, progress: Callable[[EndpointState], None] | None, *,
                keep: bool) -> EndpointState:
        """Start the host process and wait until it is InService; a failure removes the endpoint, or with `keep`
        stops it and leaves its config."""
        folder = self.store.folder(config.name)
        log = (folder / "host.log").open("ab")
        process = subprocess.Popen([sys.executable, "-m", "local_aws.router", "--folder", str(folder)],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=os.environ.copy())
        log.close()
        deadline, last = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            state = self.store.state(config.name)
            if state is not None:
                mark = state.status + "|" + ",".join(f"{v.name}:{v.status}" for v in state.variants)
                if progress is not None and mark != last:
                    progress(state)
                last = mark
                if state.status == "InService":
                    return state
                if state.status == "Failed":
                    self._undo(config.name, process, keep)
                    raise LocalEndpointError(f"endpoint {config.name} failed to start: {state.failure_reason}")
            if process.poll() is not None:
                tail = (folder / "host.log").read_text(errors="replace")[-2000:]
                self._undo(config.name, process, keep)
                raise LocalEndpointError(f"endpoint {config.name}: the host exited with code {process.returncode}:\n{tail}")
            time.sleep(0.25)
        self._undo(config.name, process, keep)
        raise LocalEndpointError(f"endpoint {config.name} was not InService after {timeout:.0f} s; "
                                 + ("stopped it" if keep else "removed it"))

    def _undo(self, name: str, process: subprocess.Popen[bytes], keep: bool) -> None:
        if keep:
            self._terminate(name, process)
        else:
            self._remove(name, process)

    def update(self, config: EndpointConfig) -> EndpointState:
        """Apply a changed config while serving (weights, added or removed variants)."""
        state = self.describe(config.name)
        if state.status not in ("InService", "Updating"):
            raise LocalEndpointError(f"endpoint {config.name} is {state.status}; it can be updated when InService")
        for variant in config.variants:
            _check_model(variant.model)
        previous = self.store.config(config.name)
        self.store.write_config(config)
        request = urllib.request.Request(f"{state.url}/_genaiops/reload", method="POST", data=b"")
        try:
            with urllib.request.urlopen(request, timeout=1200) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            self.store.write_config(previous)  # the endpoint keeps serving what it had
            raise LocalEndpointError(f"endpoint {config.name} refused the update: "
                                f"{json.loads(exc.read() or b'{}').get('message', exc.reason)}") from None
        except (OSError, http.client.HTTPException) as exc:  # the host died or hung up during the reload
            self.store.write_config(previous)
            raise LocalEndpointError(f"endpoint {config.name}: the update did not complete: {exc}") from None
        return self.describe(config.name)

    def update_weights(self, name: str, weights: dict[str, float]) -> EndpointState:
        try:
            config = self.store.config(name).with_weights(weights)
        except KeyError as exc:
            raise LocalEndpointError(str(exc.args[0])) from None
        except ValueError as exc:
            raise LocalEndpointError(f"endpoint {name}: {exc}") from None
        return self.update(config)

    def delete(self, name: str) -> None:
        """Stop the endpoint and remove it (its capture and metrics stay, for the record)."""
        if not (self.store.folder(name) / "config.json").exists():
            raise LocalEndpointError(f"no endpoint named {name!r} in {self.store.root}")
        self._remove(name, None)

    def _remove(self, name: str, process: subprocess.Popen[bytes] | None) -> None:
        self._terminate(name, process)
        shutil.rmtree(self.store.folder(name), ignore_errors=True)

    def _terminate(self, name: str, process: subprocess.Popen[bytes] | None) -> None:
        """Stop the host (SIGTERM: it drains, then stops its variants) and any variant process it left."""
        state = self.store.state(name)
        pid = process.pid if process is not None else (state.host_pid if state else None)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while _alive(pid) and time.monotonic() < deadline:
                if process is not None:
                    process.poll()
                time.sleep(0.1)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
        if state is not None:  # variant processes of a host that was killed outright
            for variant in state.variants:
                if variant.pid and _alive(variant.pid):
                    os.kill(variant.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _check_model(model: str) -> None:
    """Fail before any process starts when a model path cannot be served."""
    if model.startswith(("models:/", "runs:/")):
        return
    path = Path(model)
    if not path.exists():
        raise LocalEndpointError(f"model {model!r} does not exist")
    if not ((path / "MLmodel").exists() or (path / "config.json").exists() or (path / "code" / "inference.py").exists()):
        raise LocalEndpointError(f"model {model!r} is neither an MLflow model (no MLmodel), a Hugging Face folder "
                            "(no config.json) nor a model package (no code/inference.py)")
