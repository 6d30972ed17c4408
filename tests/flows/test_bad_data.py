"""Every kind of bad data fails the flow at `prepare`, names what and where, and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from pipelines.flows import retrain
from pipelines.settings import PipelineConfig, load_settings
from tests.data.bad_corpus import CASES, FOLDER, BadCase

BIN = Path(sys.executable).parent / "genaiops"


def _config(case: BadCase, model: Path) -> dict[str, object]:
    return {"model_name": "bad-data", "data": {"source": str(FOLDER / case.file), **case.data},
            "finetune": {"base_model": str(model), "max_steps": 1}}


def _task_states(flow_run_id: object) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {run.name.rsplit("-", 1)[0]: run.state.type.value for run in runs if run.state}


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_flow_fails_at_prepare_naming_the_check_and_rows(case: BadCase, tiny_model_dir: Path,
                                                         isolated_env: Path) -> None:
    state = retrain(PipelineConfig.model_validate(_config(case, tiny_model_dir)), return_state=True)
    assert state.is_failed()
    assert case.expected in state.message
    if case.rows:
        assert str(case.rows) in state.message
    tasks = _task_states(state.state_details.flow_run_id)
    assert tasks.get("prepare") == "FAILED" and "finetune" not in tasks and "register" not in tasks
    uri = load_settings().tracking_uri
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.search_model_versions("name = 'bad-data'") == []
    assert not (isolated_env / "runs").exists()


def test_cli_data_validate_exits_1_naming_the_problem_for_every_kind(tiny_model_dir: Path, tmp_path: Path) -> None:
    def validate(case: BadCase) -> tuple[BadCase, subprocess.CompletedProcess[str]]:
        config = tmp_path / f"{case.file}.yaml"
        config.write_text(yaml.safe_dump(_config(case, tiny_model_dir)))
        return case, subprocess.run([str(BIN), "data", "validate", str(FOLDER / case.file), "--config", str(config)],
                                    capture_output=True, text=True, timeout=300, check=False,
                                    env={**os.environ, "COLUMNS": "250"})

    with ThreadPoolExecutor(max_workers=3) as pool:  # each process spends most of its time importing
        results = list(pool.map(validate, CASES))
    for case, result in results:
        assert result.returncode == 1, (case.file, result.stdout + result.stderr)
        assert case.expected in result.stdout + result.stderr, case.file
        for row in case.rows:
            assert str(row) in result.stdout, (case.file, row)


def test_cli_retrain_on_bad_data_exits_1_in_one_line_and_registers_nothing(tiny_model_dir: Path, tmp_path: Path,
                                                              isolated_env: Path) -> None:
    case = next(c for c in CASES if c.file == "pii.jsonl")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_config(case, tiny_model_dir)))
    result = subprocess.run([str(BIN), "retrain", "--config", str(config)], capture_output=True, text=True,
                            timeout=600, check=False, env={**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "breaks the data contract" in result.stderr and "[3, 31]" in result.stderr
    # An expected failure is one readable line from Prefect too: tracebacks are for bugs.
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert "DataValidationError: " in result.stdout + result.stderr
    uri = f"sqlite:///{isolated_env / 'mlflow.db'}"
    assert MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions("name = 'bad-data'") == []
