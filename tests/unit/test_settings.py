"""Config: Settings from the environment, PipelineConfig from YAML, errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipelines.settings import ConfigError, PipelineConfig, load_config, load_settings

REPO = Path(__file__).resolve().parents[2]


def test_shipped_local_config_is_the_embedded_default() -> None:
    assert load_config(REPO / "configs" / "local.yaml") == PipelineConfig()


def test_shipped_aws_example_validates() -> None:
    config = load_config(REPO / "configs" / "aws.yaml")
    assert config.finetune.max_steps > PipelineConfig().finetune.max_steps


def test_misspelt_key_names_file_and_key_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("finetune:\n  lora:\n    rnak: 4\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert "finetune.lora.rnak" in message
    assert "unknown key" in message


def test_wrong_type_names_key_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("finetune:\n  max_steps: lots\n")
    with pytest.raises(ConfigError, match=r"finetune\.max_steps: .*integer"):
        load_config(path)


def test_out_of_range_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("finetune:\n  lora: {r: 0}\n")
    with pytest.raises(ConfigError, match=r"finetune\.lora\.r: .*greater than 0"):
        load_config(path)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("data:\n  source: [unclosed\nfinetune: {}\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: not valid YAML"):
        load_config(path)


def test_template_needs_its_input_placeholder(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"data": {"template": "Summarize {text}"}}))
    with pytest.raises(ConfigError, match=r"data\.template: .*\{input\}"):
        load_config(path)


def test_unknown_gate_metric_lists_the_allowed_ones(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"evaluate": {"gates": [{"metric": "bleurt", "min": 0.1}]}}))
    with pytest.raises(ConfigError, match=r"evaluate\.gates\.0\.metric: .*rougeL"):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_settings_come_from_genaiops_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GENAIOPS_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("GENAIOPS_REGION", "eu-west-1")
    settings = load_settings()
    assert settings.backend == "local"
    assert settings.region == "eu-west-1"
    assert settings.tracking_uri == f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}"


def test_unknown_genaiops_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENAIOPS_BAKEND", "aws")
    with pytest.raises(ConfigError, match="GENAIOPS_BAKEND"):
        load_settings()


def test_aws_backend_needs_its_coordinates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENAIOPS_BACKEND", "aws")
    with pytest.raises(ConfigError, match=r"GENAIOPS_ARTIFACT_BUCKET.*GENAIOPS_MLFLOW_TRACKING_URI"):
        load_settings()


def test_bad_backend_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENAIOPS_BACKEND", "gcp")
    with pytest.raises(ConfigError, match=r"GENAIOPS_BACKEND: .*'local' or 'aws'"):
        load_settings()


def test_settings_and_config_are_frozen() -> None:
    with pytest.raises(Exception, match="frozen"):
        PipelineConfig().model_name = "x"  # type: ignore[misc]
    with pytest.raises(Exception, match="frozen"):
        load_settings().backend = "aws"  # type: ignore[misc]


CUSTOM = ("monitoring:\n  custom:\n"
          "    - {name: mine, threshold: 1, comparison: GreaterThanThreshold, metric: {name: Invocations, stat: Sum}}\n")


@pytest.mark.parametrize(("text", "where"), [
    (CUSTOM.replace("name: Invocations,", "name: Invocations5XX,"),
     r"monitoring\.custom\.0\.metric: unknown metric 'Invocations5XX' in AWS/SageMaker: one of Invocation4XXErrors"),
    (CUSTOM.replace("stat: Sum", "stat: Median"), r"monitoring\.custom\.0\.metric\.stat: unknown statistic 'Median'"),
    (CUSTOM.replace("GreaterThanThreshold", "Above"), r"monitoring\.custom\.0\.comparison: Input should be"),
    (CUSTOM.replace("threshold: 1,", "threshold: 1, treat_missing_data: zero,"),
     r"monitoring\.custom\.0\.treat_missing_data: Input should be 'missing'"),
    ("monitoring:\n  alarms:\n    5xx_rate: {treat_missing_data: zero}\n",
     r"monitoring\.alarms\.5xx_rate\.treat_missing_data: Input should be 'missing'"),
    ("monitoring:\n  alarms:\n    latency: {threshold: 3}\n", r"monitoring: unknown default alarm\(s\) latency: one of 5xx_rate"),
    ("monitoring:\n  alarms:\n    5xx_rate: {evaluation_periods: 2, datapoints_to_alarm: 3}\n",
     r"monitoring: .*datapoints_to_alarm 3 exceeds evaluation_periods 2"),
])
def test_a_bad_alarm_is_refused_at_config_load_with_its_key_path(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=where):
        load_config(path)


def test_endpoints_capture_to_the_capture_bucket_when_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.backends import capture_uri

    monkeypatch.setenv("GENAIOPS_BACKEND", "aws")
    for name, value in (("ARTIFACT_BUCKET", "artifacts"), ("MLFLOW_TRACKING_URI", "http://127.0.0.1:1"),
                        ("SAGEMAKER_ROLE_ARN", "arn:aws:iam::000000000000:role/r")):
        monkeypatch.setenv(f"GENAIOPS_{name}", value)
    assert capture_uri(load_settings()) == "s3://artifacts/genaiops/capture"
    monkeypatch.setenv("GENAIOPS_CAPTURE_BUCKET", "captured")
    assert capture_uri(load_settings()) == "s3://captured/capture"
