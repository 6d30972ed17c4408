"""The release stage: an approved version's release request becomes a deployment, exactly once.

For each request the approval watcher wrote (`releases/requests/<model>/v<version>.json`):

1. it is claimed with a create-only write (`releases/claims/...`); a claim without a finished
   record is a release that stopped half-way, and is resumed, never started twice: every step
   after it is idempotent (the deployer's names, the alarm sync, tags, aliases, and audit
   entries stamped with the claim's time, which the append-only log keeps once);
2. the version must still be `Approved`; one that is not is not released, and says why;
3. the version's package is deployed with the configured strategy, after the endpoint's alarms exist for its
   variants (a canary's rollback alarms among them). With no champion yet, the base model serves the endpoint
   first (`release.baseline`) and the first candidate meets it exactly as a later one meets a champion; without
   a baseline, the first candidate is deployed `all_at_once`;
4. the `challenger` alias moves to the version (`champion` when it serves all traffic: a first deploy, or a
   canary or linear shift that completed, after which the replaced champion is `genaiops.release.previous`),
   the version is tagged `genaiops.release.*` (endpoint, strategy, state, started, finished), the
   audit log says what happened, and a finished record closes the request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts import tags as T
from contracts.names import BASELINE, NAME_PATTERN, Strategy, release_endpoint
from contracts.names import strategy as _strategy
from contracts.tags import (
    RELEASE_AGAINST,
    RELEASE_ENDPOINT,
    RELEASE_FINISHED,
    RELEASE_PREVIOUS,
    RELEASE_REASON,
    RELEASE_STARTED,
    RELEASE_STATE,
    RELEASE_STRATEGY,
)
from model_registry.approval import ApprovalConfig, AuditEntry, gate_digest
from model_registry.audit import AuditLog, now
from model_registry.mlflow_registry import MlflowRegistry, RegisteredVersion
from model_registry.watcher import ReleaseRequest, request_key
from monitoring.alarms import AlarmSpec
from monitoring.monitor import MonitoringConfig, endpoint_alarms
from serving.deployer import DeploymentError, SageMakerDeployer, Version
from serving.rollout import Decision, RolloutConfig, VariantEvidence, decide
from steps.artifacts import ArtifactStore

log = logging.getLogger(__name__)



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
    state: Literal["released", "skipped", "failed"]
    detail: str
    resumed: bool = False


class Releaser:
    """Carries out the release requests of one registered model."""

    def __init__(self, registry: MlflowRegistry, store: ArtifactStore, deployer: SageMakerDeployer, *,
                 config: ReleaseConfig, monitoring: MonitoringConfig, approval: ApprovalConfig,
                 sync_alarms: Callable[[str, Sequence[AlarmSpec]], Any],
                 baseline: Callable[[], Version] | None = None) -> None:
        self.registry, self.store, self.deployer = registry, store, deployer
        self.baseline = baseline if config.baseline else None  # the base model's package, built on first use
        self.audit = AuditLog(store)
        self.config, self.monitoring, self.approval = config, monitoring, approval
        self.sync_alarms = sync_alarms
        self.model = registry.model_name
        self.endpoint = config.endpoint_of(self.model)

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
        version = self.registry.get_version(request.version)
        tags = version.tags
        strategy: str = self.config.strategy
        status = tags.get(T.APPROVAL_STATUS)
        if status != T.APPROVED:
            return self._close(request, started, resumed, "skipped", strategy,
                               f"not released: the version is {status} now, not {T.APPROVED}")
        try:
            candidate = Version.of_registered(self.model, request.version, tags)
        except DeploymentError as exc:
            return self._close(request, started, resumed, "failed", strategy, str(exc))
        if resumed and tags.get(RELEASE_STRATEGY):  # finish what the stopped run started, the way it started it
            strategy = tags[RELEASE_STRATEGY]
        try:
            champion = self.champion()
        except (OSError, ValueError) as exc:  # the base model cannot be packaged here
            return self._close(request, started, resumed, "failed", strategy, f"the base model: {exc}")
        if champion is not None and champion.version == candidate.version:
            if not (resumed and strategy == "all_at_once"):
                return self._close(request, started, resumed, "skipped", strategy,
                                   "the version is the champion already")
            champion = None  # the stopped run had made it champion
        serving = self.deployer.describe(self.endpoint) is not None
        if champion is not None and champion.version == BASELINE and not serving and strategy != "all_at_once":
            # The base model serves first; the candidate then meets live traffic as it would meet a champion.
            self.sync_alarms(self.endpoint, endpoint_alarms(self.endpoint, [BASELINE], self.model, self.monitoring))
            try:
                self.deployer.deploy(self.endpoint, champion, "all_at_once")
            except DeploymentError as exc:
                return self._close(request, started, resumed, "failed", strategy, f"serving the base model: {exc}")
            serving = True
        if champion is None or not serving:
            strategy, champion = "all_at_once", None
        variants = [candidate.variant] if champion is None else [champion.variant, candidate.variant]
        specs = endpoint_alarms(self.endpoint, variants, self.model, self.monitoring)
        self.sync_alarms(self.endpoint, specs)
        rollback = [s.name for s in specs if any(a.kind == "rollback" for a in s.actions)
                    and s.name.startswith(f"{self.endpoint}/{candidate.variant}/")]
        self._tags(request.version, {RELEASE_ENDPOINT: self.endpoint, RELEASE_STRATEGY: strategy,
                                     RELEASE_STATE: "deploying", RELEASE_STARTED: started,
                                     **({RELEASE_AGAINST: champion.variant} if champion is not None else {})})
        try:
            outcome = self.deployer.deploy(self.endpoint, candidate, _strategy(strategy), champion=champion,
                                           rollback_alarms=rollback if strategy in ("canary", "linear") else None)
        except DeploymentError as exc:
            if champion is not None:  # the endpoint's alarms follow what serves again
                self.sync_alarms(self.endpoint, endpoint_alarms(self.endpoint, [champion.variant], self.model,
                                                                self.monitoring))
            return self._close(request, started, resumed, "failed", strategy, str(exc))
        replaces = strategy in ("all_at_once", "canary", "linear")  # it serves all traffic now: it is the champion
        alias = T.CHAMPION if replaces else T.CHALLENGER
        self.registry.set_alias(alias, request.version)
        if replaces and champion is not None:  # a canary or linear shift replaced the champion
            self.registry.delete_alias(T.CHALLENGER)
            self._tags(request.version, {RELEASE_PREVIOUS: champion.version})
            self.sync_alarms(self.endpoint, endpoint_alarms(self.endpoint, [candidate.variant], self.model,
                                                            self.monitoring))
        how = "serves all traffic" if replaces else f"is in {strategy} test against {champion.variant if champion else '-'}"
        return self._close(request, started, resumed, "released", strategy,
                           f"{self.endpoint} {how} ({outcome.endpoint_config}); alias {alias}")

    def champion(self) -> Version | None:
        """What serves the endpoint's traffic: the champion version, or the base model while no version is champion
        (with `release.baseline`)."""
        found = self._champion()
        if found is None and self.baseline is not None and self.registry.alias_version(T.CHAMPION) is None:
            return self.baseline()
        return found

    def _champion(self) -> Version | None:
        found = self.registry.alias_version(T.CHAMPION)
        if found is None:
            return None
        try:
            return Version.of_registered(self.model, found.version, found.tags)
        except DeploymentError:
            log.warning("%s: the champion v%s has no package; deploying the candidate alone", self.model, found.version)
            return None

    def _tags(self, version: str, values: dict[str, str]) -> None:
        current = self.registry.get_version(version).tags
        for key, value in values.items():
            if current.get(key) != value:
                self.registry.set_tag(version, key, value[:5000])

    def _close(self, request: ReleaseRequest, started: str, resumed: bool, state: Literal["released", "skipped", "failed"],
               strategy: str, detail: str) -> ReleaseOutcome:
        tags = self.registry.get_version(request.version).tags
        values = {RELEASE_STATE: state, RELEASE_STARTED: started, RELEASE_REASON: detail}
        if state != "skipped":
            values.update({RELEASE_ENDPOINT: self.endpoint, RELEASE_STRATEGY: strategy})
        finished = tags.get(RELEASE_FINISHED) if tags.get(RELEASE_STATE) == state else None
        values[RELEASE_FINISHED] = finished or now()
        self._tags(request.version, values)
        # Stamped with the claim's time: a resumed release appends the identical entry, which the log keeps once.
        self.audit.append(AuditEntry(model=self.model, version=request.version, user=self.approval.release_account,
                                     at=started, key=RELEASE_STATE, old=None, new=state, action="release",
                                     outcome=f"{state}: {detail}"[:2000], gate_digest=gate_digest(tags),
                                     note=f"strategy {strategy}, endpoint {self.endpoint}"))
        outcome = ReleaseOutcome(model=self.model, version=request.version, endpoint=self.endpoint, strategy=strategy,
                                 state=state, detail=detail, resumed=resumed)
        self.store.put_new(self._key("done", request.version), outcome.model_dump_json(indent=2).encode())
        (log.info if state == "released" else log.warning)("%s v%s: %s: %s", self.model, request.version, state, detail)
        return outcome



class RolloutStatus(BaseModel):
    model_config = ConfigDict(frozen=True)
    endpoint: str
    champion: str | None = Field(description="the champion's variant: vN, or base for the base model")
    challenger: str | None = Field(description="the challenger's variant, vN")
    strategy: str | None
    started: str | None
    decision: Decision | None = None


class Rollout:
    """The end of a shadow or A/B test: decide on live evidence, then promote or roll back (or a person overrides)."""

    def __init__(self, releaser: Releaser, config: RolloutConfig,
                 evidence: Callable[[str, str, datetime], VariantEvidence], *,
                 rouge: Callable[[str, str], float] | None = None,
                 references: Callable[[RegisteredVersion], Mapping[str, str]] | None = None,
                 shared_host: bool = False) -> None:
        self.releaser, self.config, self.evidence, self.rouge = releaser, config, evidence, rouge
        self.references = references  # inference id -> reference text, for requests that name one
        self.shared_host = shared_host  # local endpoints: a shadow's latency is not comparable
        self.registry = releaser.registry

    def status(self, now: datetime | None = None) -> RolloutStatus:
        endpoint = self.releaser.endpoint
        challenger = self.registry.alias_version(T.CHALLENGER)
        champion = self.releaser.champion() if challenger is not None else self._champion_only()
        if champion is None or challenger is None:
            return RolloutStatus(endpoint=endpoint, champion=champion.variant if champion else None,
                                 challenger=f"v{challenger.version}" if challenger else None, strategy=None, started=None)
        strategy, started = challenger.tags.get(RELEASE_STRATEGY), challenger.tags.get(RELEASE_FINISHED)
        decision = None
        if started:
            since = datetime.fromisoformat(started)
            mine, theirs = self.evidence(endpoint, f"v{challenger.version}", since), \
                self.evidence(endpoint, champion.variant, since)
            decision = decide(theirs, mine, started=since, now=now or datetime.now(UTC), config=self.config,
                              paired=strategy == "shadow", references=self._references(challenger, theirs, mine),
                              rouge=self.rouge, latency_comparable=not (self.shared_host and strategy == "shadow"))
        return RolloutStatus(endpoint=endpoint, champion=champion.variant, challenger=f"v{challenger.version}",
                             strategy=strategy, started=started, decision=decision)

    def _champion_only(self) -> Version | None:
        return self.releaser._champion()  # the champion version's package (None without one)

    def _references(self, challenger: RegisteredVersion, *variants: VariantEvidence) -> dict[str, str]:
        """Event id -> reference text, for the requests that named a reference (by their inference id)."""
        if self.references is None:
            return {}
        texts = self.references(challenger)
        return {event: texts[inference] for variant in variants for event, inference in variant.inference_ids.items()
                if inference in texts}

    def act(self, now: datetime | None = None) -> RolloutStatus:
        """What a schedule runs: decide, and promote or roll back when the evidence says so."""
        status = self.status(now)
        if status.decision is None:
            return status
        if status.decision.action == "promote":
            self.promote(self.releaser.approval.release_account, status.decision.reason)
        elif status.decision.action == "rollback":
            self.rollback(self.releaser.approval.release_account, status.decision.reason)
        return status

    def promote(self, by: str, why: str) -> str:
        """All traffic to the challenger: it becomes champion; the old champion's variant drains and goes."""
        champion, challenger = self._pair()
        candidate = Version.of_registered(self.registry.model_name, challenger.version, challenger.tags)
        releaser = self.releaser
        releaser.sync_alarms(releaser.endpoint, endpoint_alarms(releaser.endpoint, [candidate.variant],
                                                                releaser.model, releaser.monitoring))
        outcome = releaser.deployer.deploy(releaser.endpoint, candidate, "all_at_once")
        self.registry.set_alias(T.CHAMPION, challenger.version)
        self.registry.delete_alias(T.CHALLENGER)
        releaser._tags(challenger.version, {RELEASE_STATE: "promoted", RELEASE_PREVIOUS: champion.version,
                                            RELEASE_REASON: why[:5000]})
        self._audit(challenger.version, by, "promoted", why, f"champion was {_named(champion)}")
        return f"v{challenger.version} is champion on {releaser.endpoint} ({outcome.endpoint_config}); " \
               f"{_named(champion)} stays the rollback target"

    def rollback(self, by: str, why: str) -> str:
        """All traffic back to the champion: the challenger's variant goes, and its version says why."""
        target, challenger = self._pair()
        releaser = self.releaser
        outcome = releaser.deployer.deploy(releaser.endpoint, target, "all_at_once")
        releaser.sync_alarms(releaser.endpoint, endpoint_alarms(releaser.endpoint, [target.variant],
                                                                releaser.model, releaser.monitoring))
        self.registry.delete_alias(T.CHALLENGER)
        releaser._tags(challenger.version, {RELEASE_STATE: "rolled back", RELEASE_REASON: why[:5000]})
        self._audit(challenger.version, by, "rolled back", why, f"{_named(target)} serves alone")
        return f"v{challenger.version} rolled back; {_named(target)} serves {releaser.endpoint} alone " \
               f"({outcome.endpoint_config})"

    def _pair(self) -> tuple[Version, RegisteredVersion]:
        challenger = self.registry.alias_version(T.CHALLENGER)
        champion = self.releaser.champion() if challenger is not None else None
        if champion is None or challenger is None:
            found = self.registry.alias_version(T.CHAMPION)
            raise DeploymentError(f"{self.releaser.endpoint}: no rollout under way (champion "
                                  f"{'v' + found.version if found else 'unset'}, challenger "
                                  f"{'v' + challenger.version if challenger else 'unset'})")
        return champion, challenger

    def _audit(self, version: str, by: str, state: str, why: str, note: str) -> None:
        tags = self.registry.get_version(version).tags
        self.releaser.audit.append(AuditEntry(model=self.registry.model_name, version=version, user=by, at=now(),
                                              key=RELEASE_STATE, old=None, new=state, action="rollout",
                                              outcome=f"{state}: {why}"[:2000], gate_digest=gate_digest(tags),
                                              note=note))


def _named(version: Version) -> str:
    return "the base model" if version.version == BASELINE else f"v{version.version}"
