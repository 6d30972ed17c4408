"""A local endpoint's desired config and observed state, kept in the workspace so every shell sees them.

`<workspace>/endpoints/<name>/config.json` is what the user asked for (written by the CLI);
`state.json` is what the endpoint host observes (written only by the host, atomically): the
status model is SageMaker's (`Creating`, `InService`, `Updating`, `Failed`, `Deleting`).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"  # SageMaker's endpoint and variant names
FLEET = r"^([a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})?$"
EndpointStatus = Literal["Creating", "InService", "Updating", "Failed", "Deleting"]
VariantStatus = Literal["Creating", "InService", "Restarting", "Failed", "Draining"]


class VariantConfig(BaseModel):
    """One production or shadow variant: a model served by its own process."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=NAME)
    fleet: str = Field("", pattern=FLEET, description="the fleet (a SageMaker endpoint config) the variant belongs "
                                                      "to; a blue/green deployment runs two fleets side by side")
    model: str = Field(min_length=1, description="an MLflow model URI or folder, or a Hugging Face folder")
    weight: float = Field(1.0, ge=0, description="share of traffic among production variants")
    shadow: bool = Field(False, description="gets a mirrored copy of requests; its answers are captured, never returned")
    sampling_percentage: float = Field(100.0, ge=0, le=100, description="share of requests mirrored (shadow only)")
    share_while_busy: float = Field(0.1, ge=0, le=1, description="shadow only: the share of time it may compute while "
                                                                 "production has requests in flight (0: only when "
                                                                 "production is idle; 1: never stopped)")
    max_batch_size: int | None = Field(None, ge=1, le=64, description="requests batched into one generate call "
                                                                      "(unset: what the served build asks for, else 8)")
    threads: int = Field(0, ge=0, description="torch threads of the variant's process (0: torch's default)")

    @property
    def key(self) -> str:
        """Unique within an endpoint: the name within its fleet."""
        return f"{self.fleet}/{self.name}" if self.fleet else self.name


class CaptureConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    enabled: bool = True
    sampling_percentage: float = Field(100.0, ge=0, le=100)
    destination: str | None = Field(None, description="where capture goes: a folder (a path or file:// URI) or an "
                                                      "s3:// URI; default <workspace>/capture")


class EndpointConfig(BaseModel):
    """What `genaiops endpoints create` asks for."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str = Field(pattern=NAME)
    variants: list[VariantConfig] = Field(min_length=1)
    capture: CaptureConfig = CaptureConfig()
    timeout_s: float = Field(60.0, gt=0, le=3600, description="per-request timeout; past it the caller gets a 424")
    port: int = Field(0, ge=0, le=65535, description="router port on 127.0.0.1 (0: a free one)")
    host: str = "127.0.0.1"
    metrics: Literal["", "cloudwatch"] = Field("", description="where the per-variant metrics go: the workspace's "
                                                               "series, or CloudWatch (the twin in an AWS account)")
    fleet_shares: dict[str, float] = Field(
        default_factory=dict, description="while two fleets serve (a blue/green shift): each fleet's share of the "
                                          "traffic; empty when the endpoint has one fleet")

    @model_validator(mode="after")
    def _coherent(self) -> EndpointConfig:
        keys = [v.key for v in self.variants]
        duplicates = sorted({n for n in keys if keys.count(n) > 1})
        if duplicates:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(duplicates)}")
        fleets = sorted({v.fleet for v in self.variants})
        if (len(fleets) > 1 or self.fleet_shares) and set(self.fleet_shares) != set(fleets):
            raise ValueError(f"an endpoint with fleets {fleets} needs a traffic share for each (fleet_shares)")
        if self.fleet_shares and (min(self.fleet_shares.values()) < 0 or sum(self.fleet_shares.values()) <= 0):
            raise ValueError("fleet shares must be at least 0 and not all 0")
        for fleet in fleets:
            production = [v for v in self.variants if not v.shadow and v.fleet == fleet]
            where = f" of fleet {fleet}" if fleet else ""
            if not production:
                raise ValueError(f"an endpoint needs at least one production (non-shadow) variant{where}")
            if sum(v.weight for v in production) <= 0:
                raise ValueError(f"the production variants' weights{where} must not all be 0")
        return self

    @property
    def fleets(self) -> list[str]:
        return list(dict.fromkeys(v.fleet for v in self.variants))

    @property
    def production(self) -> list[VariantConfig]:
        return [v for v in self.variants if not v.shadow]

    @property
    def shadows(self) -> list[VariantConfig]:
        return [v for v in self.variants if v.shadow]

    def with_weights(self, weights: dict[str, float]) -> EndpointConfig:
        """The same endpoint with new production weights (UpdateEndpointWeightsAndCapacities)."""
        known = {v.name for v in self.production}
        unknown = sorted(set(weights) - known)
        if unknown:
            raise ValueError(f"unknown production variant(s) {unknown}; the endpoint has {sorted(known)}")
        variants = [v.model_copy(update={"weight": weights[v.name]}) if v.name in weights and not v.shadow else v
                    for v in self.variants]
        return EndpointConfig.model_validate({**self.model_dump(), "variants": [v.model_dump() for v in variants]})


class VariantState(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    fleet: str = ""
    status: VariantStatus
    shadow: bool
    weight: float
    model: str
    url: str = ""
    pid: int | None = None
    restarts: int = 0
    last_error: str = ""


class EndpointState(BaseModel):
    """What the endpoint host observes; `genaiops endpoints describe` prints it."""

    model_config = ConfigDict(frozen=True)
    name: str
    status: EndpointStatus
    url: str = ""
    host_pid: int | None = None
    variants: list[VariantState] = Field(default_factory=list)
    capture: str = ""
    metrics: str = ""
    failure_reason: str = ""
    created: str = ""
    updated: str = ""
    events: list[str] = Field(default_factory=list)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EndpointStore:
    """The endpoints folder of a workspace."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, name: str) -> Path:
        return self.root / name

    def names(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "config.json").exists())

    def config(self, name: str) -> EndpointConfig:
        path = self.folder(name) / "config.json"
        if not path.exists():
            raise KeyError(f"no endpoint named {name!r} in {self.root}")
        return EndpointConfig.model_validate_json(path.read_text())

    def write_config(self, config: EndpointConfig) -> None:
        atomic_write(self.folder(config.name) / "config.json", config.model_dump_json(indent=2))

    def state(self, name: str) -> EndpointState | None:
        path = self.folder(name) / "state.json"
        if not path.exists():
            return None
        return EndpointState.model_validate_json(path.read_text())

    def write_state(self, state: EndpointState) -> None:
        atomic_write(self.folder(state.name) / "state.json", state.model_dump_json(indent=2))


def atomic_write(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)


def dumps(state: EndpointState) -> str:
    return json.dumps(state.model_dump(), indent=2)
