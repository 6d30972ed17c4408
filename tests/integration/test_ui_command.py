"""`genaiops ui` (what `make ui` runs) serves the MLflow UI over the workspace's store on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from model_registry.mlflow_registry import MlflowRegistry
from pipelines.settings import load_settings
from tests.servers import free_port, stop, wait_http


def test_ui_serves_the_models_the_pipeline_registered(isolated_env: Path, tmp_path: Path) -> None:
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
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200 and b"MLflow" in page.read()
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/search"
        with urllib.request.urlopen(url, timeout=10) as response:
            names = [m["name"] for m in json.load(response)["registered_models"]]
        assert names == ["ui-model"]
    finally:
        stop(process)
    assert f"http://127.0.0.1:{port}" in log.read_text()
