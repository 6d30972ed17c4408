"""Why a run started (`Trigger`: on the run's parameters, its Prefect tags, its MLflow run and the version it
makes), and what the data watcher remembers of a data source to tell new data from old."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from steps.artifacts import ArtifactNotFoundError, ArtifactStore
from steps.feedback import Correction


class Trigger(BaseModel):
    """Why a run started: carried in its parameters, its Prefect tags, its MLflow run and the version it makes."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["manual", "schedule", "alarm", "new-data", "approval"] = "manual"
    name: str = Field("", description="the alarm, the data source, the approved version; or who started it")
    detail: str = Field("", description="the alarm's reason, the data's content hash")

    def tags(self) -> list[str]:
        """Prefect run tags."""
        return [f"trigger:{self.kind}", *([f"{self.kind}:{self.name}"[:100]] if self.name else [])]

    def mlflow_tags(self) -> dict[str, str]:
        """On the MLflow run and the version it registers (the approval server checks that the two agree)."""
        from contracts import tags as T

        return {T.TRIGGER: self.kind, T.TRIGGER_NAME: self.name[:250], T.TRIGGER_DETAIL: self.detail[:5000]}

    def describe(self) -> str:
        return self.kind + (f" {self.name}" if self.name else "") + (f" ({self.detail})" if self.detail else "")


def current_trigger(given: Trigger | None, user: str) -> Trigger:
    """The trigger a caller passed; else a schedule when Prefect's scheduler made this run, else the user."""
    if given is not None:
        return given
    with contextlib.suppress(Exception):
        from prefect.runtime import deployment, flow_run

        if "auto-scheduled" in (flow_run.tags or []):
            return Trigger(kind="schedule", name=str(deployment.name or ""),
                           detail=str(flow_run.scheduled_start_time or ""))
    return Trigger(kind="manual", name=user)


# --- new data -----------------------------------------------------------------------------------------------

class SourceSeen(BaseModel):
    """A data source's content hash now, and the one the last started retrain saw."""

    model_config = ConfigDict(frozen=True)
    model: str
    source: str
    content_hash: str
    previous: str | None

    @property
    def changed(self) -> bool:
        return self.content_hash != self.previous

    @property
    def key(self) -> str:
        return f"triggers/data/{self.model}.json"

    def record(self, store: ArtifactStore) -> None:
        import json
        from datetime import UTC, datetime

        store.put(self.key, json.dumps({"source": self.source, "content_hash": self.content_hash,
                                        "at": datetime.now(UTC).isoformat()}).encode("utf-8"))


def source_seen(store: ArtifactStore, model: str, source: str, corrections: Sequence[Correction] = ()) -> SourceSeen:
    """Hash the source's bytes with the corrections people gave (the hash `prepare` records as the dataset's source
    hash)."""
    import json

    from steps.data_sources import read_source
    from steps.feedback import source_hash

    data, name = read_source(source, store)
    seen = SourceSeen(model=model, source=name, content_hash=source_hash(data, corrections), previous=None)
    try:
        previous = json.loads(store.get(seen.key)).get("content_hash")
    except ArtifactNotFoundError:
        previous = None
    return seen.model_copy(update={"previous": previous})
