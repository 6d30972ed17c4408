"""The MLflow registry adapter against a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from contracts import tags as T
from model_registry.mlflow_registry import MlflowRegistry
from tests.servers import mlflow_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as url:
        yield url


def _adapter(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A real LoRA adapter on the tiny model, untrained (zero-initialised B matrices)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def test_register_is_idempotent_and_the_version_serves_through_pyfunc(
    server: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    registry = MlflowRegistry(server, experiment="it", model_name="it-model")
    adapter = _adapter(tiny_model_dir, tmp_path)
    config = {"kind": "adapter", "base_model": "tiny", "base_model_path": str(tiny_model_dir),
              "template": "Summarize:\n{input}\nSummary:", "generation": {"max_new_tokens": 4, "batch_size": 2}}
    tags = {T.APPROVAL_STATUS: T.PENDING, T.GATE: "passed", T.RUN_KEY: "key-1", T.DATASET_HASH: "d" * 64}
    with registry.runs.run("it-run", {T.RUN_KEY: "key-1"}) as run_id:
        registry.runs.log_metrics(run_id, {"candidate.rougeL": 0.5})
        first = registry.register(run_id, weights_path=str(adapter), model_config=config, tags=tags,
                                  description="**Gate passed.**")
        second = registry.register(run_id, weights_path=str(adapter), model_config=config, tags=tags,
                                   description="**Gate passed.**")
    assert first.version == second.version == "1" and second.reused
    assert first.status == T.PENDING and first.tags[T.SOURCE_RUN] == run_id
    found = registry.find_version("key-1")
    assert found is not None and found.version == "1"
    assert registry.find_version("key-2") is None
    assert registry.client.get_run(run_id).info.status == "FINISHED"

    mlflow.set_tracking_uri(server)
    mlflow.set_registry_uri(server)
    model = mlflow.pyfunc.load_model("models:/it-model/1")
    outputs = model.predict(["Ann: hi\nBob: hello", "Cy: bye"])
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)


def test_a_failing_block_marks_the_run_failed(server: str) -> None:
    registry = MlflowRegistry(server, experiment="it", model_name="it-model")
    with pytest.raises(RuntimeError, match="boom"), registry.runs.run("failing", {}) as run_id:
        raise RuntimeError("boom")
    assert registry.client.get_run(run_id).info.status == "FAILED"
