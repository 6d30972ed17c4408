"""The release stage: an approved version's release request becomes a deployment, exactly once.

For each request the approval watcher wrote (`releases/requests/<model>/v<version>.json`):

1. it is claimed with a create-only write (`releases/claims/...`); a claim without a finished
   record is a release that stopped half-way, and is resumed, never started twice: every step
   after it is idempotent (the deployer's names, the alarm sync, tags, aliases, and audit
   entries stamped with the claim's time, which the append-only log keeps once);
2. what to do is decided (`plan_release`, pure): the version must still be `Approved`; with no champion yet, the
   base model serves the endpoint first (`release.baseline`) and the first candidate meets it exactly as a later one
   meets a champion; without a baseline, the first candidate is deployed `all_at_once`;
3. the version's package is deployed with that strategy, after the endpoint's alarms exist for its variants (a
   canary's rollback alarms among them);
4. the `challenger` alias moves to the version (`champion` when it serves all traffic: a first deploy, or a
   canary or linear shift that completed, after which the replaced champion is `genaiops.release.previous`),
   the version is tagged `genaiops.release.*` (endpoint, strategy, state, started, finished), the
   audit log says what happened, and a finished record closes the request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts import tags as T
from contracts.names import BASELINE, NAME_PATTERN, Strategy, release_endpoint
from contracts.names import strategy as checked_strategy
from model_registry.approval import ApprovalConfig, AuditEntry, gate_digest
from model_registry.audit import AuditLog, now
from model_registry.mlflow_registry import MlflowRegistry, RegisteredVersion
from model_registry.watcher import ReleaseRequest, request_key
from monitoring.alarms import AlarmSpec
from monitoring.monitor import Alarms, MonitoringConfig, endpoint_alarms
from serving.deployer import DeploymentError, SageMakerDeployer, Version
from steps.artifacts import ArtifactStore

log = logging.getLogger(__name__)

State = Literal["released", "skipped", "failed"]


class ReleaseConfig(BaseModel):
    """How approved versions go out (the `release` section of a pipeline config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    endpoint: str | None = Field(None, pattern=NAME_PATTERN,
                                 description="the endpoint the model serves on; default: from the model name")
    strategy: Strategy = Field(
        "shadow", description="how a candidate meets traffic while a champion serves")
    baseline: bool = Field(True, description="with no champion yet, the base model (as it is, with the same template "
                                             "and decoding) serves the endpoint first, and the first candidate meets it "
                                             "with the strategy above; false: the first candidate goes all_at_once")

    def endpoint_of(self, model: str) -> str:
        return self.endpoint or release_endpoint(model)


class ReleaseOutcome(BaseModel):
    model_config = ConfigDict(frozen=True)
    model: str
    version: str
    endpoint: str
    strategy: str
    state: State
    detail: str
    resumed: bool = False


class ReleaseStep(BaseModel):
    """What one release does, decided before it does anything."""

    model_config = ConfigDict(frozen=True)
    skip: str | None = Field(None, description="why nothing is deployed (None: deploy)")
    strategy: Strategy
    champion: Version | None = Field(None, description="what the candidate meets (None: it goes alone)")
    baseline_first: bool = Field(False, description="serve the base model (the champion) first: nothing serves yet")

    @property
    def replaces(self) -> bool:
        """Once deployed, the candidate serves all traffic: it is the champion."""
        return self.strategy in ("all_at_once", "canary", "linear")


def plan_release(*, status: str | None, candidate: Version | None, champion: Version | None, serving: bool,
                 strategy: Strategy, resumed: bool) -> ReleaseStep:
    """The release of `candidate` (approval `status`) while `champion` (or the base model) is what should serve the
    endpoint, and `serving` says whether the endpoint exists. A resumed release keeps the strategy it started with."""
    if status != T.APPROVED or candidate is None:
        return ReleaseStep(skip=f"not released: the version is {status} now, not {T.APPROVED}", strategy=strategy)
    if champion is not None and champion.version == candidate.version:
        if not (resumed and strategy == "all_at_once"):
            return ReleaseStep(skip="the version is the champion already", strategy=strategy)
        champion = None  # the stopped run had made it champion
    first = champion is not None and champion.version == BASELINE and not serving and strategy != "all_at_once"
    if champion is None or not (serving or first):
        return ReleaseStep(strategy="all_at_once")
    return ReleaseStep(strategy=strategy, champion=champion, baseline_first=first)


class ReleaseLedger:
    """What a release and a rollout write about a version: its `genaiops.release.*` tags and the audit log."""

    def __init__(self, registry: MlflowRegistry, audit: AuditLog, approval: ApprovalConfig) -> None:
        self.registry, self.audit, self.approval = registry, audit, approval

    def tag(self, version: str, values: dict[str, str]) -> None:
        """Set the tags that differ (the release account's writes)."""
        current = self.registry.get_version(version).tags
        for key, value in values.items():
            if current.get(key) != value:
                self.registry.set_tag(version, key, value[:5000])

    def record(self, version: str, *, by: str, at: str, state: str, outcome: str, note: str, action: str) -> None:
        tags = self.registry.get_version(version).tags
        self.audit.append(AuditEntry(model=self.registry.model_name, version=version, user=by, at=at,
                                     key=T.RELEASE_STATE, old=None, new=state, action=action,
                                     outcome=f"{state}: {outcome}"[:2000], gate_digest=gate_digest(tags), note=note))


class Releaser:
    """Carries out the release requests of one registered model."""

    def __init__(self, registry: MlflowRegistry, store: ArtifactStore, deployer: SageMakerDeployer, *,
                 config: ReleaseConfig, monitoring: MonitoringConfig, approval: ApprovalConfig, alarms: Alarms,
                 notify_topic: str = "", baseline: Callable[[RegisteredVersion], Version] | None = None,
                 audit: AuditLog | None = None) -> None:
        self.registry, self.store, self.deployer, self.alarms = registry, store, deployer, alarms
        self.baseline = baseline if config.baseline else None  # the base model a version was fine-tuned from
        self.ledger = ReleaseLedger(registry, audit or AuditLog(store), approval)
        self.config, self.monitoring, self.approval, self.notify_topic = config, monitoring, approval, notify_topic
        self.model = registry.model_name
        self.endpoint = config.endpoint_of(self.model)

    # --- what serves, and its alarms -------------------------------------------------------------

    def champion(self, candidate: RegisteredVersion | None = None) -> Version | None:
        """What serves the endpoint's traffic: the champion version, or while no version is champion (with
        `release.baseline`) the base model `candidate` was fine-tuned from."""
        found = self.registry.alias_version(T.CHAMPION)
        if found is None:
            return self.baseline(candidate) if self.baseline is not None and candidate is not None else None
        try:
            return Version.of_registered(self.model, found.version, found.tags)
        except DeploymentError:
            log.warning("%s: the champion v%s has no package; deploying the candidate alone", self.model, found.version)
            return None

    def alarm_specs(self, variants: list[str]) -> list[AlarmSpec]:
        return endpoint_alarms(self.endpoint, variants, self.model, self.monitoring, notify_topic=self.notify_topic)

    def guard(self, variants: list[str]) -> list[AlarmSpec]:
        """The endpoint's alarms, for exactly these variants; returns their specs."""
        specs = self.alarm_specs(variants)
        self.alarms.sync(self.endpoint, specs)
        return specs

    def rollback_alarms(self, specs: list[AlarmSpec], variant: str) -> list[str]:
        """The alarms of `variant` whose breach rolls it back."""
        return [s.name for s in specs if any(a.kind == "rollback" for a in s.actions)
                and s.name.startswith(f"{self.endpoint}/{variant}/")]

    # --- requests --------------------------------------------------------------------------------

    def pending(self) -> list[ReleaseRequest]:
        """Requests without a finished record, oldest version first."""
        prefix = request_key(self.model, "0").rsplit("/", 1)[0]
        requests = []
        for key in self.store.list_keys(prefix):
            request = ReleaseRequest.model_validate_json(self.store.get(key))
            if not self.store.exists(self._key("done", request.version)):
                requests.append(request)
        return sorted(requests, key=lambda r: int(r.version))

    def run(self) -> list[ReleaseOutcome]:
        return [self.release(request) for request in self.pending()]

    def _key(self, kind: str, version: str) -> str:
        return f"releases/{kind}/{self.model}/v{version}.json"

    def _claim(self, request: ReleaseRequest) -> tuple[str, bool]:
        """The claim's time, and whether this run resumes an earlier one."""
        key = self._key("claims", request.version)
        stamp = now()
        if self.store.put_new(key, json.dumps({"claimed_at": stamp, "request": request.model_dump()}).encode()):
            return stamp, False
        return str(json.loads(self.store.get(key))["claimed_at"]), True

    # --- one release -----------------------------------------------------------------------------

    def release(self, request: ReleaseRequest) -> ReleaseOutcome:
        started, resumed = self._claim(request)
        if resumed:
            log.warning("%s v%s: resuming the release claimed at %s", self.model, request.version, started)
        registered = self.registry.get_version(request.version)
        tags = registered.tags

        def close(state: State, strategy: str, detail: str) -> ReleaseOutcome:
            return self._close(request, started, resumed, state, strategy, detail)

        strategy = checked_strategy(tags[T.RELEASE_STRATEGY]) if resumed and tags.get(T.RELEASE_STRATEGY) \
            else self.config.strategy  # finish what the stopped run started, the way it started it
        status = tags.get(T.APPROVAL_STATUS)
        try:
            candidate = Version.of_registered(self.model, request.version, tags) if status == T.APPROVED else None
            champion = self.champion(registered) if candidate is not None else None
        except DeploymentError as exc:
            return close("failed", strategy, str(exc))
        except (OSError, ValueError) as exc:  # the base model cannot be packaged here
            return close("failed", strategy, f"the base model: {exc}")
        step = plan_release(status=status, candidate=candidate, champion=champion, strategy=strategy, resumed=resumed,
                            serving=candidate is not None and self.deployer.describe(self.endpoint) is not None)
        if step.skip is not None or candidate is None:
            return close("skipped", step.strategy, step.skip or "")
        if step.baseline_first:  # the candidate then meets live traffic as it would meet a champion
            assert step.champion is not None
            self.guard([BASELINE])
            try:
                self.deployer.deploy(self.endpoint, step.champion, "all_at_once")
            except DeploymentError as exc:
                return close("failed", step.strategy, f"serving the base model: {exc}")
        champion = step.champion
        specs = self.guard([candidate.variant] if champion is None else [champion.variant, candidate.variant])
        self.ledger.tag(request.version, {T.RELEASE_ENDPOINT: self.endpoint, T.RELEASE_STRATEGY: step.strategy,
                                          T.RELEASE_STATE: "deploying", T.RELEASE_STARTED: started,
                                          **({T.RELEASE_AGAINST: champion.variant} if champion is not None else {})})
        guarded = step.strategy in ("canary", "linear")
        try:
            outcome = self.deployer.deploy(self.endpoint, candidate, step.strategy, champion=champion,
                                           rollback_alarms=self.rollback_alarms(specs, candidate.variant)
                                           if guarded else None)
        except DeploymentError as exc:
            if champion is not None:  # the endpoint's alarms follow what serves again
                self.guard([champion.variant])
            return close("failed", step.strategy, str(exc))
        alias = T.CHAMPION if step.replaces else T.CHALLENGER
        self.registry.set_alias(alias, request.version)
        if step.replaces and champion is not None:  # a canary or linear shift replaced the champion
            self.registry.delete_alias(T.CHALLENGER)
            self.ledger.tag(request.version, {T.RELEASE_PREVIOUS: champion.version})
            self.guard([candidate.variant])
        how = "serves all traffic" if step.replaces else \
            f"is in {step.strategy} test against {champion.variant if champion else '-'}"
        return close("released", step.strategy, f"{self.endpoint} {how} ({outcome.endpoint_config}); alias {alias}; "
                                                 f"the {candidate.build} build serves")

    def _close(self, request: ReleaseRequest, started: str, resumed: bool, state: State, strategy: str,
               detail: str) -> ReleaseOutcome:
        registered = self.registry.get_version(request.version)
        tags = registered.tags
        values = {T.RELEASE_STATE: state, T.RELEASE_STARTED: started, T.RELEASE_REASON: detail}
        if state != "skipped":
            values.update({T.RELEASE_ENDPOINT: self.endpoint, T.RELEASE_STRATEGY: strategy})
        finished = tags.get(T.RELEASE_FINISHED) if tags.get(T.RELEASE_STATE) == state else None
        values[T.RELEASE_FINISHED] = finished or now()
        self.ledger.tag(request.version, values)
        # Stamped with the claim's time: a resumed release appends the identical entry, which the log keeps once.
        self.ledger.record(request.version, by=self.approval.release_account, at=started, state=state, outcome=detail,
                           note=f"strategy {strategy}, endpoint {self.endpoint}", action="release")
        outcome = ReleaseOutcome(model=self.model, version=request.version, endpoint=self.endpoint, strategy=strategy,
                                 state=state, detail=detail, resumed=resumed)
        self.store.put_new(self._key("done", request.version), outcome.model_dump_json(indent=2).encode())
        (log.info if state == "released" else log.warning)("%s v%s: %s: %s", self.model, request.version, state, detail)
        return outcome
