"""Serving builds: merged and cast, content-addressed, re-gated against the unoptimized candidate, and served by the
package's own inference script when they pass."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from serving import package
from steps.artifacts import LocalStore
from steps.base_model import token_counter
from steps.data import Example
from steps.evaluate import EvaluateConfig, Gate, ModelScores, evaluate
from steps.generation import GenerationSettings, generate, load_model
from steps.optimize import BuildSpec, OptimizeConfig, OptimizeReport, make_build, optimize_candidate, report_tags

SAMPLES = [Example(id=str(i), prompt=f"Summarize: {who} meets Ana on {day}.\nSummary:", target=f"{who} meets Ana.")
           for i, (who, day) in enumerate([("Ben", "Monday"), ("Cleo", "Friday"), ("Dan", "Sunday"),
                                           ("Eve", "Tuesday"), ("Finn", "Monday"), ("Gus", "Friday")])]
CONFIG = EvaluateConfig(max_samples=None, general_samples=0, quality=False,
                        generation=GenerationSettings(max_new_tokens=6, batch_size=4),
                        gates=[Gate(metric="empty_rate", max=1.0)])


@pytest.fixture(scope="module")
def adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter of the tiny model whose weights are not zero, so that merging it changes the answers."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    folder = tmp_path_factory.mktemp("adapter")
    peft.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def test_a_build_merges_the_adapter_casts_the_weights_and_is_kept_once(tiny_model_dir: Path, adapter: Path,
                                                                          tmp_path: Path) -> None:
    merged, digest = make_build(tiny_model_dir, adapter, BuildSpec(name="fp32", dtype="float32"), tmp_path)
    again, same = make_build(tiny_model_dir, adapter, BuildSpec(name="fp32", dtype="float32"), tmp_path)
    assert (again, same) == (merged, digest) and merged.name == digest[:32]
    assert sorted(p.name for p in tmp_path.iterdir()) == [merged.name]  # no staging folder left behind
    prompts = [s.prompt for s in SAMPLES]
    settings = GenerationSettings(max_new_tokens=6, batch_size=3)
    with_adapter = generate(load_model(tiny_model_dir, adapter), prompts, settings)
    assert generate(load_model(merged), prompts, settings) == with_adapter
    assert generate(load_model(tiny_model_dir), prompts, settings) != with_adapter  # the adapter is really merged

    half, other = make_build(tiny_model_dir, adapter, BuildSpec(name="bf16", guard_margin=0.5), tmp_path)
    assert other != digest and (half / "head-float32.safetensors").is_file()
    assert json.loads((half / "config.json").read_text()).get("dtype", json.loads(
        (half / "config.json").read_text()).get("torch_dtype")) == "bfloat16"
    assert json.loads((half / "genaiops-build.json").read_text())["max_batch_size"] == 16


def test_each_build_is_regated_and_only_a_passing_one_serves(tiny_model_dir: Path, adapter: Path,
                                                             tmp_path: Path) -> None:
    candidate, base = load_model(tiny_model_dir, adapter, name="candidate"), load_model(tiny_model_dir, name="base")
    count = token_counter(tiny_model_dir)
    result = evaluate(candidate, base, SAMPLES, CONFIG, count_tokens=count)
    builds = OptimizeConfig(builds=[BuildSpec(name="copy", dtype="float32", max_batch_size=4),
                                    BuildSpec(name="bf16", max_batch_size=8)], min_speedup=0)
    report = optimize_candidate(result, str(tiny_model_dir), str(adapter), CONFIG, builds, tmp_path / "builds", count)
    copy, half = report.builds
    # The same weights in the same numerics: every answer equal, no loss at all, so it passes.
    assert (copy.identical, copy.rouge_delta, copy.passed, copy.reasons) == (1.0, (0.0, 0.0, 0.0), True, [])
    assert report.served is not None and report.served.passed
    assert half.tokens_per_s > 0 and 0 <= half.identical <= 1 and half.passed == (half.rouge_delta[1] > -0.01)
    assert report.served == max((b for b in report.builds if b.passed), key=lambda b: b.tokens_per_s)

    # Demanding a gain no build can show fails every build: the version keeps its unoptimized weights.
    strict = builds.model_copy(update={"max_rouge_loss": 0.0})
    failed = optimize_candidate(result, str(tiny_model_dir), str(adapter), CONFIG, strict, tmp_path / "builds", count)
    assert not failed.builds[0].passed and "ROUGE-L interval low +0.000 is not above -0" in failed.builds[0].reasons[0]
    assert failed.served is None and failed.served_name == "unoptimized" and failed.speedup == 1.0
    tags = report_tags(failed)
    assert tags["genaiops.build.served"] == "unoptimized" and tags["genaiops.builds"].startswith("copy: failed: ROUGE-L")



def scores(name: str, rouge: list[float], empty: float) -> ModelScores:
    return ModelScores(name=name, metrics={"rougeL": sum(rouge) / len(rouge), "empty_rate": empty},
                       per_sample={"rougeL": rouge}, predictions=[f"{name}{i}" for i in range(len(rouge))])


@pytest.mark.parametrize(("before", "after", "reason"), [
    (0.0, 0.05, None),  # within the bound the candidate held
    (0.0, 0.2, "empty_rate 0.200 is above its gate's max 0.1"),
    (0.3, 0.2, None),  # the candidate was over the bound itself: no worse is enough
    (0.3, 0.4, "empty_rate 0.400 is above its gate's max 0.1 and the unoptimized 0.300"),
])
def test_a_build_holds_the_bounds_of_the_gates_the_candidate_held(before: float, after: float,
                                                                   reason: str | None) -> None:
    from steps.evaluate import EvalResult
    from steps.optimize import judge

    rouge = [0.2, 0.4, 0.3, 0.5]
    candidate = scores("candidate", rouge, before)
    result = EvalResult(n_samples=4, references=["r"] * 4, prompts=["p"] * 4, candidate=candidate, base=candidate)
    config = CONFIG.model_copy(update={"gates": [Gate(metric="empty_rate", max=0.1)]})
    built = judge(result, BuildSpec(name="bf16"), scores("bf16", rouge, after), Path("b"), "d", config,
                  OptimizeConfig())
    assert built.rouge_delta == (0.0, 0.0, 0.0) and built.identical == 0.0
    assert built.reasons == ([] if reason is None else [reason]) and built.passed == (reason is None)

    lower = judge(result, BuildSpec(name="bf16"), scores("bf16", [r - 0.05 for r in rouge], before), Path("b"), "d",
                  config, OptimizeConfig())
    assert not lower.passed and lower.rouge_delta[1] == pytest.approx(-0.05)


def test_a_build_too_slow_for_min_speedup_does_not_serve() -> None:
    from steps.optimize import BuildResult

    fast = BuildResult(spec=BuildSpec(name="bf16"), digest="d", path="p", passed=True, reasons=[],
                       rouge_delta=(0.0, -0.005, 0.004), identical=0.7, metrics={"output_tokens_per_s": 15.0},
                       load_s=1.0)
    faster_failed = fast.model_copy(update={"spec": BuildSpec(name="int8"), "passed": False,
                                            "metrics": {"output_tokens_per_s": 30.0}})
    report = OptimizeReport(unoptimized_tokens_per_s=10.0, max_rouge_loss=0.01, builds=[fast, faster_failed])
    assert report.served == fast and report.speedup == 1.5
    assert report.model_copy(update={"min_speedup": 2.0}).served is None


SERVE = """
import json, sys
sys.path.insert(0, sys.argv[1] + "/code")
import inference
model = inference.model_fn(sys.argv[1])
print(json.dumps({"build": model.card.build, "batch": model.card.max_batch_size,
                  "dtype": str(next(model.loaded.model.parameters()).dtype),
                  "answer": model.predict(inference.input_fn(json.dumps({"inputs": "Ana: hi."}), "application/json"))}))
"""


def test_the_package_carries_passed_builds_and_its_inference_script_loads_the_chosen_one(
        tiny_model_dir: Path, adapter: Path, tmp_path: Path) -> None:
    candidate, base = load_model(tiny_model_dir, adapter, name="candidate"), load_model(tiny_model_dir, name="base")
    count = token_counter(tiny_model_dir)
    result = evaluate(candidate, base, SAMPLES, CONFIG, count_tokens=count)
    config = OptimizeConfig(builds=[BuildSpec(name="bf16", max_batch_size=8)], max_rouge_loss=1.0, min_speedup=0)
    report = optimize_candidate(result, str(tiny_model_dir), str(adapter), CONFIG, config, tmp_path / "builds", count)
    assert report.served_name == "bf16"
    failed = report.builds[0].model_copy(update={"spec": BuildSpec(name="int8"), "passed": False, "reasons": ["x"]})
    report = report.model_copy(update={"builds": [*report.builds, failed]})
    served = package.ServedModel(weights=str(adapter), kind="adapter", base_model="tiny",
                                 base_model_path=str(tiny_model_dir), template="Say: {input}",
                                 generation={"max_new_tokens": 2})
    built = package.build(served, LocalStore(tmp_path / "artifacts"), region="us-east-1", optimized=report)
    assert built.build == "bf16"
    with tarfile.open(fileobj=io.BytesIO(Path(built.uri.removeprefix("file://")).read_bytes())) as archive:
        names = archive.getnames()
        archive.extractall(tmp_path / "model", filter="data")
    assert "builds/bf16/model.safetensors" in names and not [n for n in names if n.startswith("builds/int8")]
    manifest = json.loads((tmp_path / "model" / "genaiops-model.json").read_text())
    assert manifest["serve"] == "bf16"
    assert [(b["name"], b["passed"]) for b in manifest["builds"]] == [("bf16", True), ("int8", False)]

    def serve(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", SERVE, str(tmp_path / "model")], capture_output=True, text=True,
                              timeout=600, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", **env})

    chosen = serve()
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    loaded = json.loads(chosen.stdout.strip().splitlines()[-1])
    assert (loaded["build"], loaded["batch"], loaded["dtype"]) == ("bf16", 8, "torch.bfloat16")
    unoptimized = json.loads(serve(GENAIOPS_BUILD="unoptimized").stdout.strip().splitlines()[-1])
    assert (unoptimized["build"], unoptimized["batch"], unoptimized["dtype"]) == ("unoptimized", None, "torch.float32")
    refused = serve(GENAIOPS_BUILD="int8")
    assert refused.returncode != 0 and "build 'int8' is not a build of this package that passed" in refused.stderr
