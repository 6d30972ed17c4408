"""The whole local lifecycle through the real CLI, on the real default model, under the offline guard."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from model_registry import tags as T
from tests.offline import BIN, refused, run_guarded

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

QUICK = {  # the default pipeline, shortened: a few steps, a few held-out samples
    "finetune": {"max_steps": 8, "eval_samples": 8, "save_steps": 4},
    "evaluate": {"max_samples": 16, "gates": [{"metric": "rougeL", "min_delta_vs_base": 0.02},
                                              {"metric": "empty_rate", "max": 0.1}]},
}


def test_retrain_on_the_default_model_registers_a_better_candidate_offline(tmp_path: Path) -> None:
    config = tmp_path / "quick.yaml"
    config.write_text(yaml.safe_dump(QUICK))
    workspace, log = tmp_path / "ws", tmp_path / "net.log"
    env = {"GENAIOPS_WORKSPACE": str(workspace), "PREFECT_HOME": str(tmp_path / "prefect")}

    first = run_guarded([str(BIN / "genaiops"), "retrain", "--config", str(config)], log, timeout=1500, **env)
    assert first.returncode == 0, first.stdout + first.stderr[-4000:]
    assert "status PendingManualApproval" in first.stdout
    assert (workspace / "models" / "smollm2-135m-instruct" / "model.safetensors").exists()

    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    [version] = client.search_model_versions("name = 'dialogue-summarizer'")
    assert version.tags[T.APPROVAL_STATUS] == T.PENDING
    assert version.tags[T.BASE_MODEL] == "builtin:smollm2-135m-instruct"
    metrics = client.get_run(version.run_id).data.metrics
    assert metrics["candidate.rougeL"] > metrics["base.rougeL"] + 0.02
    assert metrics["train.eval_loss"] < metrics["train.eval_loss_before"]
    assert metrics["train.trainable_fraction"] < 0.01

    again = run_guarded([str(BIN / "genaiops"), "retrain", "--config", str(config)], log, timeout=900, **env)
    assert again.returncode == 0, again.stdout + again.stderr[-4000:]
    assert "reused" in again.stdout
    assert len(client.search_model_versions("name = 'dialogue-summarizer'")) == 1

    assert refused(log) == []
