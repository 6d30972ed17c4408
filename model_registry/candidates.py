"""What an approver reads first: a candidate's tags and description, built from its gate report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts import tags as T
from model_registry.evidence import REPORT_FOLDER
from steps.data import PreparedDataset
from steps.evaluate import EvalResult, GateReport
from steps.evaluate_report import metrics_table


def candidate_tags(*, report: GateReport, dataset: PreparedDataset, base_model: str, run_key: str,
                   triggered_by: str, result: EvalResult, package: Mapping[str, str] | None = None) -> dict[str, str]:
    """The approval-protocol and lineage tags of a new version: pending if its gate passed, rejected if not."""
    tags = {
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
    if result.champion_version:
        tags[T.COMPARED_CHAMPION] = result.champion_version
    if package:  # what a deployment serves: named at registration, so what is approved is what goes out
        tags.update({T.PACKAGE_URI: package["uri"], T.PACKAGE_DIGEST: package["digest"],
                     T.PACKAGE_IMAGE: package["image"]})
    return tags


def candidate_description(result: EvalResult, report: GateReport, *, run_url: str) -> str:
    """The version description shown at the top of the MLflow UI: verdict, numbers, what to do."""
    verdict = "**Gate passed.** Awaiting manual approval." if report.passed else "**Gate failed.** Rejected."
    checks = "\n".join(f"- {c.describe()}" for c in report.checks)
    lines = [verdict, "", metrics_table(result), "", "Gates:", "", checks, "",
             f"Full gate report (charts, example outputs side by side): `{REPORT_FOLDER}/gate_report.html` "
             f"among the artifacts of the [source run]({run_url})."]
    if report.passed:
        lines += ["", f"To approve: set the tag `{T.APPROVAL_STATUS}` to `{T.APPROVED}` (or `{T.REJECTED}`), "
                      f"optionally with `{T.APPROVAL_NOTE}`."]
    return "\n".join(lines)


def model_config(trained: Any, template: str, generation: dict[str, Any]) -> dict[str, Any]:
    """What the pyfunc flavour needs to load and prompt the candidate, recorded with the version."""
    return {"kind": trained.kind, "base_model": trained.base_model, "base_model_path": trained.base_model_path,
            "template": template, "generation": generation}


def load_champion(registry: Any) -> tuple[Any, str | None]:
    """The current champion, loaded for evaluation, and its version; (None, None) before the first one."""
    found = registry.load_alias(T.CHAMPION)
    return found if found is not None else (None, None)


def publish_report(registry: Any, store: Any, run_id: str, result: EvalResult, report: GateReport,
                   *, dataset_hash: str, bootstrap: Any) -> str:
    """Write the gate report, log it to the run and keep it in the artifact store; returns its URI there."""
    import tempfile
    from pathlib import Path

    from steps.evaluate_report import write_report

    with tempfile.TemporaryDirectory(prefix="gate-report-") as folder:
        page = write_report(result, report, Path(folder), dataset_hash=dataset_hash, bootstrap=bootstrap)
        registry.runs.log_artifacts(run_id, folder, REPORT_FOLDER)
        for path in sorted(Path(folder).iterdir()):
            store.put(f"reports/{run_id}/{path.name}", path.read_bytes())
        return str(store.uri(f"reports/{run_id}/{page.name}"))
