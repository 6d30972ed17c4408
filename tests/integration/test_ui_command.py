"""`genaiops ui` (what `make ui` runs) serves the MLflow UI over the workspace's store on 127.0.0.1,
behind sign-in, with the users of the approval config."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from model_registry.mlflow_registry import MlflowRegistry
from pipelines.settings import load_settings
from tests.servers import descendants, free_port, running, stop, wait_http


@pytest.mark.parametrize(("signum", "store"), [(signal.SIGTERM, "sqlite"), (signal.SIGINT, "sqlite"),
                                               (signal.SIGTERM, "postgresql")], ids=["SIGTERM", "Ctrl-C", "PostgreSQL"])
def test_ui_serves_the_models_the_pipeline_registered_and_stops_all_it_started(
        isolated_env: Path, tmp_path: Path, signum: signal.Signals, store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with contextlib.ExitStack() as stack:
        if store == "postgresql":  # the setting that points `make ui` (and the flows) at PostgreSQL
            from tests.postgres import PASSWORD, postgres

            monkeypatch.setenv("GENAIOPS_MLFLOW_TRACKING_URI", stack.enter_context(postgres()))
        serve_and_stop(isolated_env, tmp_path, signum)
        if store == "postgresql":
            import urllib.parse

            printed = (tmp_path / "ui.log").read_text()
            assert PASSWORD not in printed and urllib.parse.quote(PASSWORD, safe="") not in printed  # never printed


def serve_and_stop(isolated_env: Path, tmp_path: Path, signum: signal.Signals) -> None:
    settings = load_settings()
    registry = MlflowRegistry(settings.tracking_uri, experiment="ui", model_name="ui-model",
                              artifact_root=settings.mlflow_artifact_root)
    registry.client.create_registered_model("ui-model", description="made by the test")

    port = free_port()
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(Path(sys.executable).parent / "genaiops"), "ui", "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ), start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process, timeout=120, log=log)
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)
        passwords = json.loads((isolated_env / "auth" / "passwords.json").read_text())
        assert set(passwords) == {"admin", "alice", "bob", "genaiops-pipeline", "genaiops-watcher", "genaiops-release",
                                  "genaiops-feedback", "demo-approver"}  # the demo approver while approval.demo is on
        assert oct((isolated_env / "auth" / "passwords.json").stat().st_mode & 0o777) == "0o600"
        auth = "Basic " + base64.b64encode(f"bob:{passwords['bob']}".encode()).decode()
        page = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Authorization": auth})
        with urllib.request.urlopen(page, timeout=10) as response:
            assert response.status == 200 and b"MLflow" in response.read()
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/search"
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": auth}), timeout=10) as response:
            names = [m["name"] for m in json.load(response)["registered_models"]]
        assert names == ["ui-model"]
        started = descendants(process.pid)
        assert len(started) >= 2  # the MLflow server and its workers
        process.send_signal(signum)  # to `genaiops ui` alone, as a service manager or a terminal sends it
        assert process.wait(timeout=120) == 0
        left = sorted(pid for pid in started if running(pid))
        assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]
    finally:
        stop(process)
    text = log.read_text()
    assert f"http://127.0.0.1:{port}" in text
    assert "approvers: alice" in text and "release: genaiops-release" in text and "feedback: genaiops-feedback" in text
