"""The servable package: deterministic, content-addressed, and served by its own inference script alone."""

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

SCRIPT = """
import json, sys
code = sys.argv[1] + "/code"
sys.path.insert(0, code)
import inference
import serving.handler
assert serving.handler.__file__.startswith(code), serving.handler.__file__  # the shipped copy, not the project
model = inference.model_fn(sys.argv[1])
request = inference.input_fn(json.dumps({"inputs": "Ana: hi. Ben: hello.", "parameters": {"max_new_tokens": 2}}),
                             "application/json")
print(inference.output_fn(inference.predict_fn(request, model), "application/json"))
"""


def serves_alone(model: Path) -> None:
    """As the container runs it: a fresh interpreter, the package's own code first on the path, one answer."""
    answer = subprocess.run([sys.executable, "-c", SCRIPT, str(model)], capture_output=True, text=True,
                            timeout=600, cwd=model.parent, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert answer.returncode == 0, answer.stderr[-3000:]
    assert len(json.loads(answer.stdout.strip().splitlines()[-1])) == 1


def test_a_package_is_built_once_and_its_inference_script_serves_it_alone(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "artifacts")
    served = package.ServedModel(weights=str(tiny_model_dir), kind="full", base_model="tiny", template="Say: {input}",
                                 generation={"max_new_tokens": 2})
    first = package.build(served, store, region="eu-west-1", config=package.PackageConfig(instance_type="ml.m5.large"))
    again = package.build(served, store, region="eu-west-1", config=package.PackageConfig(instance_type="ml.m5.large"))
    assert (again.uri, again.digest, again.reused, first.reused) == (first.uri, first.digest, True, False)
    assert first.image == ("763104351884.dkr.ecr.eu-west-1.amazonaws.com/huggingface-pytorch-inference:"
                           "2.6.0-transformers4.51.3-cpu-py312-ubuntu22.04")
    data = Path(first.uri.removeprefix("file://")).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = archive.getnames()
        archive.extractall(tmp_path / "model", filter="data")
    assert {"genaiops-model.json", "code/inference.py", "code/requirements.txt", "code/serving/handler.py",
            "code/steps/generation.py", "code/steps/prompts.py", "weights/config.json"} <= set(names)
    manifest = json.loads((tmp_path / "model" / "genaiops-model.json").read_text())
    assert manifest["template"] == "Say: {input}" and manifest["kind"] == "full"
    serves_alone(tmp_path / "model")


def test_the_base_model_package_holds_no_weights_and_serves_the_base_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "artifacts")
    built = package.of_base("tiny", str(tiny_model_dir), template="Say: {input}", generation={"max_new_tokens": 2},
                            store=store, region="us-east-1")
    with tarfile.open(fileobj=io.BytesIO(Path(built.uri.removeprefix("file://")).read_bytes())) as archive:
        names = archive.getnames()
        archive.extractall(tmp_path / "model", filter="data")
    assert not [n for n in names if n.startswith(("weights/", "base/"))]  # read in place locally: a small package
    manifest = json.loads((tmp_path / "model" / "genaiops-model.json").read_text())
    assert (manifest["kind"], manifest["base_model_path"]) == ("base", str(tiny_model_dir))
    serves_alone(tmp_path / "model")


def test_a_package_of_weights_that_do_not_match_their_kind_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "artifacts")
    with pytest.raises(ValueError, match=r"an adapter needs adapter_config\.json"):
        package.archive(package.ServedModel(weights=str(tiny_model_dir), kind="adapter", base_model="x"),
                        package.PackageConfig())
    with pytest.raises(FileNotFoundError, match="not a folder here"):
        package.build(package.ServedModel(weights=str(tmp_path / "nowhere"), kind="full", base_model="x"), store,
                      region="us-east-1")
    assert not (tmp_path / "artifacts").exists()  # nothing half-written
