"""The `optimize` stage: faster serving builds of a candidate that passed its gate, each re-gated.

A build merges the LoRA adapter into the base weights and serves them with other numerics or
another engine setting: bfloat16 weights (AMX on CPUs that have it), a larger batch, an output
layer that recomputes greedy near ties in float32 (`guard_margin`), `torch.compile`.
Every faster build changes greedy outputs, so none is assumed equal to the candidate: each is
scored on the same held-out samples, with the same decoding and the same harness as the
unoptimized candidate was, and passes only when

- the lower end of the paired bootstrap interval of its ROUGE-L minus the candidate's is above
  `-max_rouge_loss`, and
- it holds every absolute bound (`min`, `max`) of the evaluation gates (empty, blocklist,
  unfaithful and toxic rates) on its own outputs that the candidate held, and is no worse than
  the candidate on a bound the candidate did not hold.

A build that fails is recorded with its numbers and never served. Of those that pass, the one
with the most output tokens/s serves, if that is at least `min_speedup` times the candidate's.

Each build is a Hugging Face model folder, content-addressed: `<root>/<digest>/`, where the
digest is the SHA-256 of its files, so building the same candidate twice keeps one copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts import tags as T
from steps.data import Example
from steps.evaluate import EvalResult, EvaluateConfig, ModelScores, bootstrap_delta, score_model
from steps.generation import BUILD_HEAD, BUILD_MANIFEST, DType, load_build, load_model

log = logging.getLogger(__name__)

UNOPTIMIZED = "unoptimized"


class BuildSpec(BaseModel):
    """One serving build: its numerics, the batch the server gathers for it, and whether it is compiled."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    dtype: DType = "bfloat16"
    max_batch_size: int = Field(16, ge=1, le=64, description="requests the model server batches into one call")
    compile: bool = Field(False, description="torch.compile the forward pass (minutes of compiling at load on CPU)")
    guard_margin: float | None = Field(None, gt=0, description="recompute in float32 the logits of a position whose "
                                                               "two best tokens are closer than this (greedy near "
                                                               "ties); unset: never")

    @model_validator(mode="after")
    def _not_reserved(self) -> BuildSpec:
        if self.name == UNOPTIMIZED:
            raise ValueError(f"build name {UNOPTIMIZED!r} is the candidate itself; name the build otherwise")
        return self


class OptimizeConfig(BaseModel):
    """Which builds the `optimize` stage makes after the gate passes, and how much quality each may lose."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    enabled: bool = True
    builds: list[BuildSpec] = Field(default_factory=lambda: [BuildSpec(name="bf16", guard_margin=0.5)])
    max_rouge_loss: float = Field(0.01, ge=0, description="a build passes when the lower end of the paired "
                                                          "bootstrap interval of (build - candidate) ROUGE-L is "
                                                          "above minus this")
    min_speedup: float = Field(1.0, ge=0, description="a passed build serves only with at least this many times the "
                                                      "candidate's output tokens/s at the re-gate (0: the fastest "
                                                      "passed build serves, however slow)")

    @model_validator(mode="after")
    def _unique(self) -> OptimizeConfig:
        names = [b.name for b in self.builds]
        if len(set(names)) != len(names):
            raise ValueError(f"optimize.builds: names must be unique, got {names}")
        return self


class BuildResult(BaseModel):
    """One build and its re-gate: what it is, where it is, what it scored against the candidate."""

    model_config = ConfigDict(frozen=True)
    spec: BuildSpec
    digest: str
    path: str
    passed: bool
    reasons: list[str]  # why it failed (empty when it passed)
    rouge_delta: tuple[float, float, float]  # build - candidate ROUGE-L: point, interval low, interval high
    identical: float  # share of greedy outputs equal to the candidate's
    metrics: dict[str, float]
    load_s: float

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tokens_per_s(self) -> float:
        return self.metrics.get("output_tokens_per_s", 0.0)

    def describe(self) -> str:
        point, low, high = self.rouge_delta
        verdict = "passed" if self.passed else "failed: " + "; ".join(self.reasons)
        return (f"{self.name} ({self.spec.dtype}, batch {self.spec.max_batch_size}{', compiled' if self.spec.compile else ''}): "
                f"ROUGE-L {point:+.3f} [{low:+.3f}, {high:+.3f}] vs unoptimized, {self.identical:.0%} identical, "
                f"{self.tokens_per_s:.1f} tokens/s; {verdict}")


class OptimizeReport(BaseModel):
    """Every build of a candidate, re-gated, and which one serves."""

    model_config = ConfigDict(frozen=True)
    unoptimized_tokens_per_s: float
    max_rouge_loss: float
    min_speedup: float = 1.0
    builds: list[BuildResult]

    @property
    def served(self) -> BuildResult | None:
        """The passed build with the most output tokens/s, if it is `min_speedup` times as fast as the candidate;
        else None (the unoptimized weights serve)."""
        floor = self.min_speedup * self.unoptimized_tokens_per_s
        passed = [b for b in self.builds if b.passed and b.tokens_per_s >= floor]
        return max(passed, key=lambda b: b.tokens_per_s) if passed else None

    @property
    def served_name(self) -> str:
        return self.served.name if self.served is not None else UNOPTIMIZED

    @property
    def speedup(self) -> float:
        """Output tokens/s of the served build over the candidate's (1.0 when the candidate serves)."""
        served = self.served
        if served is None or not self.unoptimized_tokens_per_s:
            return 1.0
        return served.tokens_per_s / self.unoptimized_tokens_per_s

    def summary(self) -> str:
        lines = [f"unoptimized: {self.unoptimized_tokens_per_s:.1f} tokens/s"]
        lines += [b.describe() for b in self.builds]
        lines.append(f"serves: {self.served_name}" + (f" ({self.speedup:.2f}x the unoptimized tokens/s)"
                                                       if self.served is not None else ""))
        return "\n".join(lines)


def make_build(base_model_path: str | Path, adapter_path: str | Path | None, spec: BuildSpec, root: Path) -> tuple[Path, str]:
    """The build's model folder under `root` (merged adapter, cast weights, tokenizer, build manifest) and its
    digest; a build with the same files is kept once."""
    import torch

    loaded = load_model(base_model_path, adapter_path, name=spec.name)  # merged in float32, then cast once
    head = loaded.model.get_output_embeddings().weight.detach().clone()
    loaded.model = loaded.model.to(getattr(torch, spec.dtype))
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{spec.name}-{time.time_ns()}"
    try:
        loaded.model.save_pretrained(staging, safe_serialization=True)
        if spec.guard_margin:
            from safetensors.torch import save_file

            save_file({"weight": head.contiguous()}, str(staging / BUILD_HEAD))
        loaded.tokenizer.save_pretrained(staging)
        (staging / BUILD_MANIFEST).write_text(json.dumps(spec.model_dump(), indent=2, sort_keys=True))
        digest = folder_digest(staging)
        target = root / digest[:32]
        if target.exists():
            shutil.rmtree(staging)
        else:
            staging.rename(target)
        return target, digest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def folder_digest(folder: Path) -> str:
    """SHA-256 over a folder's files (relative names and contents, in sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def regate(result: EvalResult, spec: BuildSpec, folder: Path, digest: str, config: EvaluateConfig,
           optimize: OptimizeConfig, count_tokens: Callable[[Sequence[str]], list[int]] | None) -> BuildResult:
    """Score a build on the candidate's held-out samples and decide whether it may serve."""
    started = time.perf_counter()
    loaded, _ = load_build(folder, name=spec.name)
    load_s = time.perf_counter() - started
    samples = [Example(id=str(i), prompt=p, target=t) for i, (p, t) in enumerate(zip(result.prompts, result.references,
                                                                                     strict=True))]
    batched = config.model_copy(update={"generation": config.generation.model_copy(
        update={"batch_size": spec.max_batch_size})})
    scores = score_model(loaded, samples, [], batched, count_tokens)
    return judge(result, spec, scores, folder, digest, config, optimize, load_s)


def judge(result: EvalResult, spec: BuildSpec, scores: ModelScores, folder: Path, digest: str,
          config: EvaluateConfig, optimize: OptimizeConfig, load_s: float = 0.0) -> BuildResult:
    """The re-gate's decision for a scored build (pure: the build's scores against the candidate's)."""
    unoptimized = result.candidate
    paired = result.model_copy(update={"candidate": scores})
    point, low, high = bootstrap_delta("rougeL", paired, unoptimized, config.bootstrap)
    reasons = []
    if low <= -optimize.max_rouge_loss:
        reasons.append(f"ROUGE-L interval low {low:+.3f} is not above -{optimize.max_rouge_loss:g}")
    for gate in config.gates:
        value, before = scores.metrics.get(gate.metric), unoptimized.metrics.get(gate.metric)
        if value is None or before is None or gate.metric.startswith("general."):
            continue
        # A bound the candidate held, the build holds; where the candidate did not, the build is no worse.
        if gate.max is not None and value > max(gate.max, before):
            reasons.append(f"{gate.metric} {value:.3f} is above its gate's max {gate.max:g}"
                           + (f" and the unoptimized {before:.3f}" if before > gate.max else ""))
        if gate.min is not None and value < min(gate.min, before):
            reasons.append(f"{gate.metric} {value:.3f} is below its gate's min {gate.min:g}"
                           + (f" and the unoptimized {before:.3f}" if before < gate.min else ""))
    identical = statistics.fmean(float(a == b) for a, b in zip(scores.predictions, unoptimized.predictions,
                                                                strict=True))
    kept = {k: v for k, v in scores.metrics.items() if not k.startswith("general.")}
    return BuildResult(spec=spec, digest=digest, path=str(folder), passed=not reasons, reasons=reasons,
                       rouge_delta=(point, low, high), identical=identical, metrics=kept, load_s=load_s)


def optimize_candidate(result: EvalResult, base_model_path: str, adapter_path: str | None, config: EvaluateConfig,
                       optimize: OptimizeConfig, root: Path,
                       count_tokens: Callable[[Sequence[str]], list[int]] | None = None,
                       progress: Callable[[str], None] | None = None) -> OptimizeReport:
    """Make and re-gate every configured build of a candidate whose evaluation is `result`."""
    say = progress or log.info
    builds = []
    for spec in optimize.builds if optimize.enabled else []:
        say(f"optimize: building {spec.name} ({spec.dtype}, batch {spec.max_batch_size}"
            f"{', compiled' if spec.compile else ''})")
        folder, digest = make_build(base_model_path, adapter_path, spec, root)
        say(f"optimize: re-gating {spec.name} on {result.n_samples} held-out samples")
        built = regate(result, spec, folder, digest, config, optimize, count_tokens)
        say(f"optimize: {built.describe()}")
        builds.append(built)
    return OptimizeReport(unoptimized_tokens_per_s=result.candidate.metrics.get("output_tokens_per_s", 0.0),
                          max_rouge_loss=optimize.max_rouge_loss, min_speedup=optimize.min_speedup, builds=builds)


def report_tags(report: OptimizeReport) -> dict[str, str]:
    """What the model version records of its builds (the registry page and the release read these)."""
    lines = []
    for build in report.builds:
        point, low, _ = build.rouge_delta
        lines.append(f"{build.name}: {'passed' if build.passed else 'failed: ' + '; '.join(build.reasons)}; "
                     f"{build.tokens_per_s:.1f} tokens/s ({report.unoptimized_tokens_per_s:.1f} unoptimized); "
                     f"ROUGE-L {point:+.3f} (low {low:+.3f}); {build.identical:.0%} identical")
    return {T.BUILD_SERVED: report.served_name, T.BUILD_SPEEDUP: f"{report.speedup:.2f}",
            T.BUILDS: "\n".join(lines)[:5000]}


def not_optimizable(trained: Any) -> str | None:
    """Why a candidate has no builds made here (None when it can): its weights must be a folder on this machine."""
    if str(trained.path).startswith("s3://") or not trained.base_model_path:
        return "its weights are not on this machine (a SageMaker training job's artifact)"
    return None
