"""The whole local lifecycle through the real CLI, on the real default model, under the offline guard:
a run killed mid-training resumes from its last checkpoint, registers a candidate that beats the base
model, and a third run with the same inputs reuses it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from contracts import tags as T
from tests.offline import BIN, guarded_env, refused, run_guarded

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

QUICK = {  # the default pipeline, shortened: a few steps, a few held-out samples
    "finetune": {"max_steps": 8, "eval_samples": 8, "save_steps": 2},
    "evaluate": {"max_samples": 16, "gates": [{"metric": "rougeL", "min_delta_vs_base": 0.02},
                                              {"metric": "empty_rate", "max": 0.1}]},
}


def _kill_after_first_checkpoint(command: list[str], env: dict[str, str], workspace: Path, log: Path) -> None:
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 900
        while not list(workspace.glob("runs/*/checkpoints/checkpoint-*/trainer_state.json")):
            assert process.poll() is None, f"exited before a checkpoint:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no checkpoint after 15 minutes"
            time.sleep(0.5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the CLI and the Prefect server it started
        process.wait(timeout=60)


def test_killed_training_resumes_and_registers_a_better_candidate_offline(tmp_path: Path) -> None:
    config = tmp_path / "quick.yaml"
    config.write_text(yaml.safe_dump(QUICK))
    workspace, net = tmp_path / "ws", tmp_path / "net.log"
    env = {"GENAIOPS_WORKSPACE": str(workspace), "PREFECT_HOME": str(tmp_path / "prefect")}
    command = [str(BIN / "genaiops"), "retrain", "--config", str(config)]

    _kill_after_first_checkpoint(command, guarded_env(net, **env), workspace, tmp_path / "killed.log")
    assert (workspace / "models" / "smollm2-135m-instruct" / "model.safetensors").exists()

    resumed = run_guarded(command, net, timeout=1500, **env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr[-4000:]
    assert "resuming from" in resumed.stderr and "status PendingManualApproval" in resumed.stdout

    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    [version] = client.search_model_versions("name = 'dialogue-summarizer'")
    assert version.tags[T.APPROVAL_STATUS] == T.PENDING
    assert version.tags[T.BASE_MODEL] == "builtin:smollm2-135m-instruct"
    metrics = client.get_run(version.run_id).data.metrics
    assert metrics["train.resumed_from_step"] >= 2 and metrics["train.steps"] == 8
    assert metrics["candidate.rougeL"] > metrics["base.rougeL"] + 0.02
    assert metrics["train.eval_loss"] < metrics["train.eval_loss_before"]
    assert metrics["train.trainable_fraction"] < 0.01
    statuses = sorted(r.info.status for r in client.search_runs([client.get_run(version.run_id).info.experiment_id]))
    assert statuses == ["FINISHED", "KILLED"]  # the killed attempt is closed, not left RUNNING

    again = run_guarded(command, net, timeout=900, **env)
    assert again.returncode == 0, again.stdout + again.stderr[-4000:]
    assert "reused" in again.stdout
    assert len(client.search_model_versions("name = 'dialogue-summarizer'")) == 1

    assert refused(net) == []


def test_a_candidate_trained_to_name_the_wrong_people_is_refused_by_the_faithfulness_gate(tmp_path: Path) -> None:
    """The data names people the dialogues never mention; the candidate learns it, ROUGE cannot tell, the gate can."""
    data = tmp_path / "wrong-names.jsonl"
    made = subprocess.run([str(BIN / "genaiops"), "data", "generate", "--out", str(data), "--perturb", "invented_name"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0 and "made unfaithful: invented_name" in made.stdout, made.stderr
    config = tmp_path / "wrong.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"source": str(data)},
        "finetune": {"max_steps": 16, "eval_samples": 8, "save_steps": 8},
        "evaluate": {"max_samples": 24, "general_samples": 0,
                     "gates": [{"metric": "rougeL", "min_delta_vs_base": 0.02},  # ROUGE-L is fooled
                               {"metric": "unfaithful_rate", "max_worse_vs_base": 0.0},
                               {"metric": "unfaithful_rate", "max": 0.2}, {"metric": "toxic_rate", "max": 0.0}]},
    }))
    workspace, net = tmp_path / "ws", tmp_path / "net.log"
    result = run_guarded([str(BIN / "genaiops"), "retrain", "--config", str(config)], net, timeout=1500,
                         GENAIOPS_WORKSPACE=str(workspace), PREFECT_HOME=str(tmp_path / "prefect"))
    assert result.returncode == 1, result.stdout + result.stderr[-4000:]
    said = result.stdout + result.stderr
    assert "Rejected" in said and "gates failed: unfaithful_rate <= 0.2" in said and "(FAILED)" in said
    assert "rougeL" not in said.split("gates failed:")[1].split("\n")[0]  # ROUGE-L passed: only faithfulness failed
    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    [version] = client.search_model_versions("name = 'dialogue-summarizer'")
    assert version.tags[T.APPROVAL_STATUS] == T.REJECTED and version.tags[T.GATE] == "failed"
    metrics = client.get_run(version.run_id).data.metrics
    assert metrics["candidate.unfaithful_rate"] > 0.2 and metrics["candidate.rougeL"] > metrics["base.rougeL"] + 0.02
    assert "unfaithful_rate" in version.description
    assert refused(net) == []
