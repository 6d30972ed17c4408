"""Notifications of the platform: a run that failed, a version waiting for approval, an alarm, a rollback. Each
carries links to where a person acts (the Prefect run, the MLflow version).

On the aws backend they are published to the SNS topic of the `GENAIOPS_NOTIFY_TOPIC_ARN` setting (the alarms'
topic, so one subscription hears both); locally they are logged and appended to `<workspace>/notifications.jsonl`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from model_registry.approval import ApprovalConfig

log = logging.getLogger("genaiops.notify")


class Notifier(Protocol):
    def send(self, subject: str, message: str, links: Mapping[str, str]) -> None: ...


def _body(message: str, links: Mapping[str, str]) -> str:
    return "\n".join([message, *(f"{label}: {url}" for label, url in links.items())])


class LocalNotifier:
    """The console (a WARNING log line) and a JSON Lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, subject: str, message: str, links: Mapping[str, str]) -> None:
        log.warning("%s: %s", subject, _body(message, links).replace("\n", "  ·  "))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"at": datetime.now(UTC).isoformat(), "subject": subject, "message": message,
                                  "links": dict(links)}) + "\n")


class SnsNotifier:
    """An SNS topic (its subscriptions: e-mail, chat, a pager)."""

    def __init__(self, client: Any, topic_arn: str) -> None:
        self.client, self.topic_arn = client, topic_arn

    def send(self, subject: str, message: str, links: Mapping[str, str]) -> None:
        self.client.publish(TopicArn=self.topic_arn, Subject=subject[:100], Message=_body(message, links))
        log.info("published to %s: %s", self.topic_arn, subject)


def waiting_for_approval(notifier: Notifier, result: Any, approval: ApprovalConfig) -> None:
    """A new version waits for an approver (the approvers of `approval`, the demo account left out): where to read
    its gate report and approve it."""
    approvers = [a for a in approval.approvers if a != approval.demo_account]
    notifier.send(f"genaiops: {result.model_name} v{result.version} waits for approval",
                  f"{result.model_name} version {result.version} passed its gates ({result.gate_summary}) and is "
                  f"{result.status}; approvers: {', '.join(approvers)}",
                  {"version": result.version_url, "mlflow run": result.run_url, "gate report": result.report_uri})
