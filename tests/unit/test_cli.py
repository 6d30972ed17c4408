"""The genaiops console script: help, config show/schema, exit codes that say what went wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent / "genaiops"
REPO = Path(__file__).resolve().parents[2]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("retrain", "config", "data", "ui"):
        assert command in result.stdout


def test_config_show_prints_merged_settings_and_pipeline() -> None:
    result = run("config", "show", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["settings"]["backend"] == "local"
    assert document["settings"]["tracking_uri"].startswith("sqlite:///")
    assert document["pipeline"]["finetune"]["base_model"] == "builtin:smollm2-135m-instruct"
    as_yaml = yaml.safe_load(run("config", "show", "-c", str(REPO / "configs" / "aws.yaml")).stdout)
    assert as_yaml["pipeline"]["finetune"]["max_steps"] == 300


def test_config_schema_is_the_pipeline_json_schema() -> None:
    result = run("config", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert {"data", "finetune", "evaluate"} <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_misspelt_key_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  max_stepz: 3\n")
    for command in (["config", "show"], ["retrain"]):
        result = run(*command, "--config", str(bad))
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert str(bad) in result.stderr and "finetune.max_stepz: unknown key" in result.stderr


def test_config_path_from_the_environment_is_used(tmp_path: Path) -> None:
    custom = tmp_path / "custom.yaml"
    custom.write_text("model_name: from-env\n")
    result = run("config", "show", "--json", env={"GENAIOPS_CONFIG": str(custom)})
    assert json.loads(result.stdout)["pipeline"]["model_name"] == "from-env"


def test_unknown_environment_variable_exits_2() -> None:
    result = run("config", "show", env={"GENAIOPS_WORKSPAC": "/tmp/x"})
    assert result.returncode == 2 and "GENAIOPS_WORKSPAC" in result.stderr


def test_data_validate_exits_1_on_a_bad_file_and_0_on_a_good_one(
    tmp_path: Path, sample_jsonl: Path, tiny_model_dir: Path
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"finetune": {"base_model": str(tiny_model_dir)}}))
    good = run("data", "validate", str(sample_jsonl), "--config", str(config))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "no duplicate or near-duplicate dialogue" in good.stdout and "passed" in good.stdout
    records = [json.loads(line) for line in sample_jsonl.read_text().splitlines()]
    records[4]["dialogue"] = ""
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = run("data", "validate", str(bad), "--config", str(config))
    assert result.returncode == 1
    assert "dialogue is not empty" in result.stdout and "breaks the data contract" in result.stderr


def test_data_generate_writes_the_requested_records(tmp_path: Path) -> None:
    out = tmp_path / "gen.jsonl"
    result = run("data", "generate", "--out", str(out), "--rows", "25", "--seed", "3")
    assert result.returncode == 0
    assert len(out.read_text().splitlines()) == 25


def test_endpoint_commands_refuse_bad_input_before_starting_anything(tmp_path: Path, isolated_env: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    cases = [
        (("endpoints", "create", "e", "--variant", "a"), 2, "expected NAME=MODEL[:WEIGHT]"),
        (("endpoints", "create", "e", "--variant", f"a={tmp_path / 'missing'}"), 1, "does not exist"),
        (("endpoints", "create", "e", "--variant", f"a={model}"), 1, "neither an MLflow model"),
        (("endpoints", "create", "e", "-v", f"a={model}", "-s", f"a={model}:10"), 2, "variant names must be unique"),
        (("endpoints", "create", "e", "-v", f"a={model}:0"), 2, "must not all be 0"),
        (("endpoints", "create", "bad_name", "-v", f"a={model}"), 2, "name"),
        (("endpoints", "create", "e", "-v", f"a={model}", "-s", f"b={model}", "--shadow-share", "2"), 2,
         "--shadow-share"),
        (("endpoints", "describe", "nope"), 1, "no endpoint named 'nope'"),
        (("endpoints", "update-weights", "nope", "a=x"), 2, "expected VARIANT=WEIGHT with a number"),
        (("endpoints", "delete", "nope"), 1, "no endpoint named 'nope'"),
        (("invoke", "nope", "--data", "{}"), 1, "Endpoint nope of account"),  # SageMaker Runtime's words
    ]
    try:
        for args, code, message in cases:
            result = run(*args)
            assert result.returncode == code and message in result.stderr, (args, result.returncode, result.stderr)
        assert not (isolated_env / "endpoints").exists() or not any((isolated_env / "endpoints").iterdir())
        listed = run("endpoints", "list", "--json")
        assert listed.returncode == 0 and json.loads(listed.stdout) == []
    finally:
        run("sagemaker-api", "--stop")
