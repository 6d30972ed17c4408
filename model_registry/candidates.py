"""What an approver reads first: a candidate's tags and description, built from its gate report."""

from __future__ import annotations

from collections.abc import Mapping

from model_registry import tags as T
from steps.data import PreparedDataset
from steps.evaluate import EvalResult, GateReport

SHOWN_METRICS = ("rougeL", "rouge1", "rouge2", "empty_rate", "length_ratio", "seconds_per_sample")


def candidate_tags(*, report: GateReport, dataset: PreparedDataset, base_model: str, run_key: str,
                   triggered_by: str) -> dict[str, str]:
    """The approval-protocol and lineage tags of a new version: pending if its gate passed, rejected if not."""
    return {
        T.APPROVAL_STATUS: T.PENDING if report.passed else T.REJECTED,
        T.GATE: "passed" if report.passed else "failed",
        T.GATE_SUMMARY: report.summary()[:5000],
        T.DATASET_HASH: dataset.hash,
        T.DATASET_SOURCE: dataset.source[:5000],
        T.DATASET_ROWS: ",".join(f"{k}={v}" for k, v in dataset.counts.items()),
        T.DATA_VALIDATION: dataset.validation.summary()[:5000],
        T.BASE_MODEL: base_model,
        T.RUN_KEY: run_key,
        T.TRIGGERED_BY: triggered_by,
    }


def metrics_table(result: EvalResult) -> str:
    lines = ["| metric | candidate | base | change |", "| --- | ---: | ---: | ---: |"]
    for name in SHOWN_METRICS:
        cand, base = result.candidate.metrics[name], result.base.metrics[name]
        lines.append(f"| {name} | {cand:.4f} | {base:.4f} | {cand - base:+.4f} |")
    return "\n".join(lines)


def gate_report_markdown(result: EvalResult, report: GateReport, *, dataset_hash: str,
                         examples: int = 5) -> str:
    """The full gate report: verdict, every check, metrics against the base model, sample outputs."""
    lines = [
        f"# Gate report: {'PASSED' if report.passed else 'FAILED'}",
        "",
        f"Held-out samples: {result.n_samples} · dataset `{dataset_hash[:12]}`",
        "",
        "## Gates",
        "",
        "| metric | rule | threshold | value | result |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    lines += [f"| {c.metric} | {c.rule} | {c.threshold:g} | {c.value:.4f} | {'pass' if c.passed else 'FAIL'} |"
              for c in report.checks]
    lines += ["", "## Metrics", "", metrics_table(result), "", "## Examples", ""]
    for i in range(min(examples, result.n_samples)):
        lines += [
            f"**{i + 1}.** reference: {result.references[i]}",
            f"- candidate: {result.candidate.predictions[i] or '(empty)'}",
            f"- base: {result.base.predictions[i] or '(empty)'}",
            "",
        ]
    return "\n".join(lines)


def candidate_description(result: EvalResult, report: GateReport, *, run_url: str,
                          extra: Mapping[str, str] | None = None) -> str:
    """The version description shown at the top of the MLflow UI: verdict, numbers, what to do."""
    verdict = "**Gate passed.** Awaiting manual approval." if report.passed else "**Gate failed.** Rejected."
    lines = [verdict, "", metrics_table(result), "", f"Checks: {report.summary()}", "",
             f"Full gate report: `gate_report.md` in the [source run]({run_url})."]
    for key, value in (extra or {}).items():
        lines.append(f"{key}: {value}")
    if report.passed:
        lines += ["", f"To approve: set the tag `{T.APPROVAL_STATUS}` to `{T.APPROVED}` (or `{T.REJECTED}`), "
                      f"optionally with `{T.APPROVAL_NOTE}`."]
    return "\n".join(lines)
