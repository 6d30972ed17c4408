"""LoRA against full fine-tuning of the default model: step time, peak memory, trainable parameters.

Each method runs in its own process (peak memory is per process) through the same `finetune()`
code path the pipeline uses, on the shipped sample data, with the same batch and sequence
lengths; results are reported as ratios of the two measured in this run.

    .venv/bin/python -m bench.finetune_lora_vs_full [--steps 8] [--write bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import publish

ROOT = Path(__file__).resolve().parents[1]


def measure(method: str, steps: int, workspace: Path) -> dict[str, float]:
    """Runs in a child process: fine-tune `steps` steps and report timings and memory."""
    from bench.common import sample
    from steps.data import build_splits
    from steps.finetune import FinetuneConfig, finetune

    base, config, frame = sample(workspace)
    splits = build_splits(frame, config)
    stamps: list[float] = []
    finetune_config = FinetuneConfig(method=method, max_steps=steps, batch_size=8, eval_samples=8,
                                     save_steps=steps + 1, learning_rate=3e-3 if method == "lora" else 2e-5)
    with tempfile.TemporaryDirectory(dir=workspace) as out:
        trained = finetune(splits["train"], splits["validation"], finetune_config, base, Path(out),
                           on_metrics=lambda step, m: stamps.append(time.monotonic()) if "loss" in m else None)
    intervals = [b - a for a, b in itertools.pairwise(stamps)]
    return {"step_seconds": statistics.median(intervals), "peak_rss_mb": trained.metrics["peak_rss_mb"],
            "trainable_params": trained.metrics["trainable_params"], "total_params": trained.metrics["total_params"],
            "estimated_memory_mb": trained.metrics["estimated_memory_mb"], "steps": len(stamps)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workspace", type=Path, default=ROOT / ".genaiops")
    parser.add_argument("--write", type=Path, help="append the results to this Markdown file")
    parser.add_argument("--child", choices=["lora", "full"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.steps, args.workspace)))
        return
    results = {}
    for method in ("lora", "full"):
        out = subprocess.run([sys.executable, "-m", "bench.finetune_lora_vs_full", "--child", method,
                              "--steps", str(args.steps), "--workspace", str(args.workspace)],
                             cwd=ROOT, capture_output=True, text=True, check=True)
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        print(method, results[method], flush=True)
    lora, full = results["lora"], results["full"]
    table = "\n".join([
        f"## Fine-tuning: LoRA vs full, SmolLM2-135M-Instruct ({time.strftime('%Y-%m-%d')})",
        "",
        f"`python -m bench.finetune_lora_vs_full --steps {args.steps}`: batch 8, the shipped sample, CPU fp32, "
        "median step time over the measured steps, peak RSS of each method's own process.",
        "",
        "| | LoRA (r=8, q/k/v/o) | full | full / LoRA |",
        "| --- | ---: | ---: | ---: |",
        f"| trainable parameters | {lora['trainable_params']:,.0f} ({lora['trainable_params'] / lora['total_params']:.2%}) "
        f"| {full['trainable_params']:,.0f} (100%) | {full['trainable_params'] / lora['trainable_params']:.0f}x |",
        f"| step time (s) | {lora['step_seconds']:.2f} | {full['step_seconds']:.2f} | "
        f"{full['step_seconds'] / lora['step_seconds']:.2f}x |",
        f"| peak RSS (MB) | {lora['peak_rss_mb']:.0f} | {full['peak_rss_mb']:.0f} | "
        f"{full['peak_rss_mb'] / lora['peak_rss_mb']:.2f}x |",
        f"| planned memory (MB, upper bound) | {lora['estimated_memory_mb']:.0f} | {full['estimated_memory_mb']:.0f} | "
        f"{full['estimated_memory_mb'] / lora['estimated_memory_mb']:.2f}x |",
        "",
    ])
    publish(table, args.write)


if __name__ == "__main__":
    main()
