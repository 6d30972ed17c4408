"""The evaluation harness through endpoints: each production variant of a real local endpoint, called with
boto3's `sagemaker-runtime` client and `TargetVariant`, answers exactly what the same model answers in this
process for the same held-out prompts, template and decoding settings, task and general-skills alike."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from contracts.names import BASELINE
from local_aws.server import client as local_client
from local_aws.server import running_url
from local_aws.server import stop as stop_twin
from serving import package
from serving.deployer import DeploymentConfig, SageMakerDeployer, Version
from steps.artifacts import LocalStore
from steps.data import Example
from steps.endpoint_generation import EndpointError, EndpointGenerator, runtime_client
from steps.evaluate import EvaluateConfig, general_skills, score_model
from steps.generation import GenerationSettings, load_model
from steps.prompts import render_prompt
from tests.conftest import make_tiny_model
from tests.servers import control_plane_state

TEMPLATE = "Summarize the following conversation.\n\n{input}\n\nSummary:"
RECORDS = ["Ana: Is the parcel here?\nBen: Yes, it came at noon.", "Kim: Can we move the call?\nLee: To 3pm, fine.",
           "Sam: The lights flicker.\nJo:   I'll send an electrician.", "Eve: Lunch?\nDan: Sure, at one."]
SAMPLES = [Example(id=f"r{i}", prompt=render_prompt(TEMPLATE, text), target="a summary") for i, text in
           enumerate(RECORDS)]


@pytest.fixture
def packages(isolated_env: Path, tiny_model_dir: Path, smollm2_tokenizer_dir: Path,
             tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A fine-tuned model's package (`candidate`) and its base model's (`base`), with their folders, and the
    workspace whose local control plane serves them; stopped afterwards."""
    from pipelines.settings import load_settings

    root = load_settings().root
    store = LocalStore(root / "artifacts")
    generation = {"max_new_tokens": 6}
    candidate_dir = make_tiny_model(smollm2_tokenizer_dir, tmp_path / "candidate", seed=5)
    built = package.build(package.ServedModel(weights=str(candidate_dir), kind="full", base_model="tiny",
                                              template=TEMPLATE, generation=generation), store, region="us-east-1")
    base = package.of_base("tiny", str(tiny_model_dir), template=TEMPLATE, generation=generation, store=store,
                           region="us-east-1")
    try:
        yield {"root": root, "candidate_dir": candidate_dir, "base_dir": tiny_model_dir,
               "candidate": Version(model="tiny", version="candidate", package_uri=built.uri, digest=built.digest,
                                    image=built.image),
               "base": Version(model="tiny", version=BASELINE, package_uri=base.uri, digest=base.digest,
                               image=base.image),
               "deployer": SageMakerDeployer(local_client(root), DeploymentConfig(instance_type="ml.m5.large",
                                                                                 poll_seconds=1))}
    finally:
        stop_twin(root)


@pytest.fixture
def endpoint(packages: dict[str, Any]) -> tuple[str, Path, Path]:
    """`evaluation` with two production variants, candidate and base (A/B weights 0.9 and 0.1)."""
    packages["deployer"].deploy("evaluation", packages["candidate"], "ab", champion=packages["base"])
    return running_url(packages["root"]) or "", packages["candidate_dir"], packages["base_dir"]


def test_each_variant_answers_what_its_model_answers_in_process(endpoint: tuple[str, Path, Path]) -> None:
    url, candidate_dir, base_dir = endpoint
    runtime = runtime_client("us-east-1", url)
    config = EvaluateConfig(max_samples=None, general_samples=3, generation=GenerationSettings(max_new_tokens=6,
                                                                                               batch_size=1))
    general = general_skills()[:3]
    for variant, folder in (("candidate", candidate_dir), ("base", base_dir)):
        served = score_model(EndpointGenerator(runtime, "evaluation", variant, template=TEMPLATE), SAMPLES, general,
                             config)
        local = score_model(load_model(folder, name=variant), SAMPLES, general, config)
        assert served.predictions == local.predictions, variant
        assert served.general_predictions == local.general_predictions, variant
    # Every answer came from the variant asked for (the generator checks InvokedProductionVariant; with weights
    # 0.9 and 0.1, an ignored TargetVariant would have base's requests answered by candidate).


def test_inputs_go_out_in_batches_and_a_missing_variant_is_an_error(endpoint: tuple[str, Path, Path]) -> None:
    url, _, _ = endpoint
    calls: list[int] = []
    runtime = runtime_client("us-east-1", url)
    runtime.meta.events.register("provide-client-params.sagemaker-runtime.InvokeEndpoint",
                                 lambda params, **_: calls.append(len(json.loads(params["Body"])["inputs"])))
    generator = EndpointGenerator(runtime, "evaluation", "candidate", template=TEMPLATE)
    outputs, latencies = generator.complete([s.prompt for s in SAMPLES] * 2, GenerationSettings(max_new_tokens=4,
                                                                                              batch_size=3))
    assert calls == [3, 3, 2] and len(outputs) == len(latencies) == 8
    with pytest.raises(EndpointError, match="evaluation/v9 did not answer"):
        EndpointGenerator(runtime, "evaluation", "v9", template=TEMPLATE).complete([SAMPLES[0].prompt],
                                                                                    GenerationSettings())


def test_the_evaluation_endpoint_serves_candidate_and_base_and_is_gone_when_the_stage_ends_however_it_ends(
        packages: dict[str, Any]) -> None:
    from contracts.tags import EXPIRES_AT as EXPIRES_TAG
    from serving.evaluation_endpoint import evaluation_endpoint

    root, candidate, base, deployer = (packages[k] for k in ("root", "candidate", "base", "deployer"))
    with evaluation_endpoint(deployer, "tiny-eval", candidate, base, ttl_s=3600) as name:
        sagemaker = local_client(root)
        described = sagemaker.describe_endpoint(EndpointName=name)
        assert sorted(v["VariantName"] for v in described["ProductionVariants"]) == ["base", "candidate"]
        tags = {t["Key"]: t["Value"] for t in sagemaker.list_tags(ResourceArn=described["EndpointArn"])["Tags"]}
        assert tags[EXPIRES_TAG] > datetime.now(UTC).isoformat(timespec="seconds")
        runtime = runtime_client("us-east-1", running_url(root))
        for variant in ("candidate", "base"):
            outputs, _ = EndpointGenerator(runtime, name, variant, template=TEMPLATE).complete(
                [SAMPLES[0].prompt], GenerationSettings(max_new_tokens=2))
            assert len(outputs) == 1
    assert control_plane_state(root) == {"endpoints": [], "configs": [], "models": []}

    with pytest.raises(EndpointError), evaluation_endpoint(deployer, "tiny-eval", candidate, base, ttl_s=3600) as name:
        EndpointGenerator(runtime_client("us-east-1", running_url(root)), name, "candidate",
                          template=TEMPLATE).complete([SAMPLES[0].prompt], GenerationSettings(max_new_tokens=2))
        EndpointGenerator(runtime_client("us-east-1", running_url(root)), name, "champion",
                          template=TEMPLATE).complete([SAMPLES[0].prompt], GenerationSettings())  # fails half-way
    assert control_plane_state(root) == {"endpoints": [], "configs": [], "models": []}


def test_endpoints_gc_deletes_only_the_endpoints_whose_expiry_passed(packages: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from contracts.tags import EXPIRES_AT as EXPIRES_TAG
    from pipelines.cli import app

    root, candidate, base, deployer = (packages[k] for k in ("root", "candidate", "base", "deployer"))
    past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="seconds")
    future = (datetime.now(UTC) + timedelta(hours=2)).isoformat(timespec="seconds")
    deployer.deploy("left-by-a-killed-run", candidate, "all_at_once", tags={EXPIRES_TAG: past})
    deployer.deploy("still-evaluating", base, "all_at_once", tags={EXPIRES_TAG: future})
    result = CliRunner().invoke(app, ["endpoints", "gc"], env={"GENAIOPS_WORKSPACE": str(root)})
    assert result.exit_code == 0, result.output
    assert "endpoint left-by-a-killed-run" in result.output and "still-evaluating" not in result.output
    left = control_plane_state(root)
    assert left["endpoints"] == ["still-evaluating"]
    [model] = left["models"]  # the expired endpoint's model and config went; the live one's stay
    assert len(left["configs"]) == 1 and "-base-" in model and "candidate" not in model
    again = CliRunner().invoke(app, ["endpoints", "gc"], env={"GENAIOPS_WORKSPACE": str(root)})
    assert again.exit_code == 0 and "no expired endpoint" in again.output
