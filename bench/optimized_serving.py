"""The optimized serving build against today's endpoint: the same requests in the same run, each behind a local
endpoint that serves its package as the container would.

The model is the candidate `make run` makes: SmolLM2-135M-Instruct with the LoRA adapter the default
config trains on the shipped sample (trained here once, or `--adapter`). Two packages of it:

- unoptimized: the package as it was before the `optimize` stage: float32 weights, batches of up to 8;
- optimized: the package with the build the `optimize` stage chose with the default config, re-gated
  first on the whole held-out split (ROUGE-L paired bootstrap interval of build - unoptimized, which
  must stay above -0.01, and the gates' bounds).

For each, at 1, 8 and 16 callers (each on its own kept-alive connection, distinct held-out dialogues,
32 new tokens): requests/s and new tokens/s (tokens of the answers, in the model's tokenizer); and the
load time (endpoint creation until InService), the model server's peak RSS, and the overhead over the
model's own time (latency minus the model time the server reports, one token, sequential requests).

    .venv/bin/python -m bench.optimized_serving [--requests 48] [--write bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.serving_vs_mlflow import ROOT, call, percentile

CALLERS = (1, 8, 16)
TARGETS = {16: 2.5, 8: 1.7}  # optimized / unoptimized new tokens/s


def packages(scratch: Path, base: Path, adapter: Path, template: str, inputs: list[str], references: list[str],
             new_tokens: int, builds: Any) -> tuple[Path, Path, Any]:
    """The unoptimized and the optimized package, extracted, and the optimize report of the latter."""
    from serving import package
    from steps.artifacts import LocalStore
    from steps.base_model import token_counter
    from steps.data import Example
    from steps.evaluate import EvaluateConfig, score_model
    from steps.generation import GenerationSettings, load_model
    from steps.optimize import optimize_candidate
    from steps.prompts import render_prompt

    config = EvaluateConfig(max_samples=None, general_samples=0,
                            generation=GenerationSettings(max_new_tokens=new_tokens, batch_size=8))
    samples = [Example(id=str(i), prompt=render_prompt(template, text), target=target)
               for i, (text, target) in enumerate(zip(inputs, references, strict=True))]
    count = token_counter(base)
    print(f"re-gate: scoring the unoptimized weights on {len(samples)} held-out samples", flush=True)
    from steps.evaluate import EvalResult

    unoptimized = score_model(load_model(base, adapter, name="candidate"), samples, [], config, count)
    result = EvalResult(n_samples=len(samples), references=references, prompts=[s.prompt for s in samples],
                        candidate=unoptimized, base=unoptimized)
    report = optimize_candidate(result, str(base), str(adapter), config, builds, scratch / "builds", count, print)
    store = LocalStore(scratch / "artifacts")
    served = package.ServedModel(weights=str(adapter), kind="adapter", base_model="builtin:smollm2-135m-instruct",
                                 base_model_path=str(base), template=template,
                                 generation={"max_new_tokens": new_tokens})
    folders = []
    for name, optimized in (("unoptimized", None), ("optimized", report)):
        built = package.build(served, store, region="us-east-1", optimized=optimized)
        folder = scratch / name
        with tarfile.open(fileobj=io.BytesIO(Path(built.uri.removeprefix("file://")).read_bytes())) as archive:
            archive.extractall(folder, filter="data")
        folders.append(folder)
    return folders[0], folders[1], report


def candidate(workspace: Path, adapter: Path | None) -> Path:
    """The LoRA adapter of the default config on the shipped sample (trained once into the workspace)."""
    if adapter is not None:
        return adapter
    import yaml

    from steps.artifacts import LocalStore
    from steps.base_model import resolve_base_model, token_counter
    from steps.data import DataConfig, prepare_dataset
    from steps.finetune import FinetuneConfig, LocalLoraTrainer

    document = yaml.safe_load((ROOT / "configs" / "local.yaml").read_text())
    base = resolve_base_model(document["finetune"]["base_model"], workspace / "models")
    dataset = prepare_dataset(DataConfig.model_validate(document["data"]), LocalStore(workspace / "artifacts"),
                              token_counter(base))
    print("training the default candidate (reused when trained before)", flush=True)
    trained = LocalLoraTrainer(workspace / "models", workspace / "bench-runs").train(
        dataset, FinetuneConfig.model_validate(document["finetune"]))
    return Path(trained.path)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(endpoints: Any, name: str, model: Path, texts: list[str], count: Any, overhead_requests: int) -> dict[str, Any]:
    from local_aws.endpoint import EndpointConfig

    started = time.perf_counter()
    state = endpoints.create(EndpointConfig.model_validate({
        "name": name, "variants": [{"name": "main", "model": str(model)}], "capture": {"enabled": False},
        "timeout_s": 600}))
    load_s = time.perf_counter() - started
    url = f"{state.url}/endpoints/{name}/invocations"
    try:
        one = json.dumps({"inputs": texts[0], "parameters": {"max_new_tokens": 1}}).encode()
        call(url, one)
        exact = []
        for _ in range(overhead_requests):
            latency, headers, _ = call(url, one)
            exact.append(latency * 1000 - int(headers["x-genaiops-model-time-us"]) / 1000)
        call(url, json.dumps({"inputs": texts[0]}).encode())  # warm up at the full length
        rates: dict[int, dict[str, float]] = {}
        for callers in CALLERS:
            bodies = [json.dumps({"inputs": t}).encode() for t in texts]
            began = time.perf_counter()
            with ThreadPoolExecutor(callers) as pool:
                answers = list(pool.map(lambda b: json.loads(call(url, b)[2])[0]["generated_text"], bodies))
            elapsed = time.perf_counter() - began
            rates[callers] = {"req_s": len(bodies) / elapsed, "tokens_s": sum(count(answers)) / elapsed}
            print(f"{name}: {callers} callers: {rates[callers]}", flush=True)
        pid = endpoints.describe(name).variants[0].pid
        return {"load_s": load_s, "rss_mb": peak_rss_mb(pid) if pid else 0.0, "rates": rates,
                "overhead_median_ms": statistics.median(exact), "overhead_p99_ms": percentile(exact, 99)}
    finally:
        endpoints.delete(name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=48, help="held-out dialogues per callers level")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--overhead-requests", type=int, default=40)
    parser.add_argument("--workspace", type=Path, default=ROOT / ".genaiops")
    parser.add_argument("--adapter", type=Path, help="the candidate's LoRA adapter (default: train the default one)")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()

    from bench.common import publish, sample
    from local_aws.endpoints import LocalEndpoints
    from steps.base_model import token_counter
    from steps.data import SPLIT
    from steps.optimize import OptimizeConfig

    base, data_config, frame = sample(args.workspace)
    test = frame[frame[SPLIT] == "test"]
    held = [str(t) for t in test[data_config.columns.input].tolist()]
    references = [str(t) for t in test[data_config.columns.target].tolist()]
    inputs = held[: args.requests]
    adapter = candidate(args.workspace, args.adapter)
    scratch = Path(tempfile.mkdtemp(prefix="bench-optimized-"))
    builds = OptimizeConfig()  # the default builds, as `make run` makes them
    plain, fast, report = packages(scratch, base, adapter, data_config.template, held, references, args.new_tokens,
                                   builds)
    print(report.summary(), flush=True)
    count = token_counter(base)
    endpoints = LocalEndpoints(scratch / "ws")
    found = {label: measure(endpoints, label, folder, inputs, count, args.overhead_requests)
             for label, folder in (("unoptimized", plain), ("optimized", fast))}
    before, after = found["unoptimized"], found["optimized"]
    served = report.served
    regate = "no build passed its re-gate" if served is None else (
        f"`{served.name}` ({served.spec.dtype}, batches of up to {served.spec.max_batch_size}"
        f"{', compiled' if served.spec.compile else ''}): ROUGE-L {served.rouge_delta[0]:+.3f}, interval "
        f"[{served.rouge_delta[1]:+.3f}, {served.rouge_delta[2]:+.3f}] against the unoptimized weights (passes above "
        f"-{report.max_rouge_loss:g}), {served.identical:.0%} of greedy outputs identical")
    ratio = {c: after["rates"][c]["tokens_s"] / before["rates"][c]["tokens_s"] for c in CALLERS}
    lines = [
        f"## Serving: the optimized build against the unoptimized endpoint ({time.strftime('%Y-%m-%d')})", "",
        f"`python -m bench.optimized_serving --requests {args.requests} --new-tokens {args.new_tokens}`: "
        "the candidate `make run` trains (SmolLM2-135M-Instruct, LoRA, the default config), its package without "
        "and with the `optimize` stage's build, each behind a local endpoint that serves it as the container "
        f"would; the same {len(inputs)} held-out dialogues at each level, up to {args.new_tokens} new tokens, "
        "greedy, N callers at once, each on its own kept-alive connection.", "",
        f"Re-gate of the served build on all {len(held)} held-out dialogues: {regate}.", "",
        "| callers | unoptimized (req/s) | optimized (req/s) | unoptimized (new tokens/s) | optimized (new tokens/s) "
        "| optimized / unoptimized (tokens/s) | target |", "| ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        *(f"| {c} | {before['rates'][c]['req_s']:.2f} | {after['rates'][c]['req_s']:.2f} | "
          f"{before['rates'][c]['tokens_s']:.1f} | {after['rates'][c]['tokens_s']:.1f} | {ratio[c]:.2f}x | "
          + (f"≥ {TARGETS[c]}x: {'met' if ratio[c] >= TARGETS[c] and served is not None else 'not met'}"
             if c in TARGETS else "") + " |" for c in CALLERS), "",
        "| | unoptimized | optimized |", "| --- | ---: | ---: |",
        f"| load time, endpoint created to InService (s) | {before['load_s']:.1f} | {after['load_s']:.1f} |",
        f"| peak RSS of the model server (MB) | {before['rss_mb']:.0f} | {after['rss_mb']:.0f} |",
        f"| overhead over the model's own time, median / p99 (ms) | {before['overhead_median_ms']:.2f} / "
        f"{before['overhead_p99_ms']:.2f} | {after['overhead_median_ms']:.2f} / {after['overhead_p99_ms']:.2f} |", "",
        "Overhead target ≤ 2 ms median: " + ("met" if after["overhead_median_ms"] <= 2 else "not met") + ".", "",
    ]
    publish("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
