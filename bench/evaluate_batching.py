"""Batched generation in the evaluation harness: samples/s at batch sizes 1, 4 and 8.

The default base model completes the same held-out prompts of the shipped sample at each batch
size, greedy, the same number of new tokens; results are ratios against batch size 1 in the
same run.

    .venv/bin/python -m bench.evaluate_batching [--samples 24] [--write bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--workspace", type=Path, default=ROOT / ".genaiops")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()

    from bench.common import held_out, publish
    from steps.generation import GenerationSettings, generate, load_model

    samples = held_out(args.workspace, args.samples)
    base, prompts = samples.base, samples.prompts
    model = load_model(base, None, name="base")
    generate(model, prompts[:2], GenerationSettings(max_new_tokens=4, batch_size=2))  # warm up
    rates: dict[int, float] = {}
    outputs: dict[int, list[str]] = {}
    for batch_size in (1, 4, 8):
        settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=batch_size)
        started = time.perf_counter()
        outputs[batch_size] = generate(model, prompts, settings)
        rates[batch_size] = len(prompts) / (time.perf_counter() - started)
        print(f"batch {batch_size}: {rates[batch_size]:.2f} samples/s", flush=True)
    same = sum(a == b for a, b in zip(outputs[1], outputs[8], strict=True))
    lines = [
        f"## Evaluation harness: batched generation ({time.strftime('%Y-%m-%d')})", "",
        f"`python -m bench.evaluate_batching --samples {args.samples}`: SmolLM2-135M-Instruct, greedy, "
        f"up to {args.max_new_tokens} new tokens, {len(prompts)} held-out prompts, CPU fp32.", "",
        "| batch size | samples/s | vs batch 1 |", "| ---: | ---: | ---: |",
        *(f"| {b} | {r:.2f} | {r / rates[1]:.2f}x |" for b, r in rates.items()), "",
        f"Greedy outputs at batch 8 equal those at batch 1 for {same} of {len(prompts)} prompts "
        "(left padding changes float rounding, which can flip a near-tie).", "",
    ]
    publish("\n".join(lines), args.write)


if __name__ == "__main__":
    main()
