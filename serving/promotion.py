"""The end of a shadow or A/B test: decide on live evidence (`serving.rollout.decide`), then promote or roll back;
or a person overrides the decision; or a rollback alarm of the candidate's variant went into ALARM (CloudWatch's,
through the EventBridge rule that starts the rollout with the alarm as its trigger, or the local evaluator's), and
the candidate is rolled back whatever the evidence says."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from contracts import tags as T
from contracts.names import BASELINE
from model_registry.audit import now
from model_registry.mlflow_registry import RegisteredVersion
from serving.deployer import DeploymentError, Version
from serving.evidence import EvidenceReader
from serving.release import Releaser
from serving.rollout import Decision, Evidence, Quality, RolloutConfig, VariantEvidence, decide
from steps.feedback import Feedback

log = logging.getLogger(__name__)


class RolloutStatus(BaseModel):
    model_config = ConfigDict(frozen=True)
    endpoint: str
    champion: str | None = Field(description="the champion's variant: vN, or base for the base model")
    challenger: str | None = Field(description="the challenger's variant, vN")
    strategy: str | None
    started: str | None
    decision: Decision | None = None
    unreadable: int = Field(0, description="captured records of the endpoint that could not be read, skipped")


class Rollout:
    """Promote, roll back or wait, with what each does to the endpoint, the aliases, the tags and the audit log."""

    def __init__(self, releaser: Releaser, config: RolloutConfig, evidence: EvidenceReader, *,
                 rouge: Callable[[str, str], float] | None = None,
                 references: Callable[[RegisteredVersion], Mapping[str, str]] | None = None,
                 shared_host: bool = False, notify: Callable[[str, str], None] | None = None,
                 quality: Quality | None = None,
                 feedback: Callable[[str, datetime], Sequence[Feedback]] | None = None,
                 cost: tuple[Callable[[Sequence[str]], list[int]], float] | None = None) -> None:
        self.releaser, self.config, self.evidence, self.rouge = releaser, config, evidence, rouge
        self.references = references  # inference id -> reference text, for requests that name one
        self.shared_host = shared_host  # local endpoints: a shadow's latency is not comparable
        self.notify = notify  # (subject, message): a rollback is news for the people on call
        self.registry = releaser.registry
        self.quality = quality  # (inputs, outputs) -> unfaithful and toxic flags (steps.scoring)
        self.feedback = feedback  # (endpoint, since) -> people's judgements of its answers (steps.feedback)
        self.cost = cost  # (a token counter, the instance's price per hour): cost per 1,000 output tokens, shown

    def status(self, now: datetime | None = None) -> RolloutStatus:
        endpoint = self.releaser.endpoint
        challenger = self.registry.alias_version(T.CHALLENGER)
        champion = self.releaser.champion(challenger)
        if champion is None or challenger is None:
            return RolloutStatus(endpoint=endpoint, champion=champion.variant if champion else None,
                                 challenger=f"v{challenger.version}" if challenger else None, strategy=None, started=None)
        strategy, started = challenger.tags.get(T.RELEASE_STRATEGY), challenger.tags.get(T.RELEASE_FINISHED)
        decision = None
        if started:
            since = datetime.fromisoformat(started)
            mine, theirs = self.evidence(endpoint, f"v{challenger.version}", since), \
                self.evidence(endpoint, champion.variant, since)
            decision = decide(theirs, mine, started=since, now=now or datetime.now(UTC), config=self.config,
                              paired=strategy == "shadow", references=self._references(challenger, theirs, mine),
                              rouge=self.rouge, latency_comparable=not (self.shared_host and strategy == "shadow"),
                              quality=self.quality, ratings=self._ratings(endpoint, since), cost=self.cost)
            return RolloutStatus(endpoint=endpoint, champion=champion.variant, challenger=f"v{challenger.version}",
                                 strategy=strategy, started=started, decision=decision,
                                 unreadable=max(mine.unreadable, theirs.unreadable))
        return RolloutStatus(endpoint=endpoint, champion=champion.variant, challenger=f"v{challenger.version}",
                             strategy=strategy, started=started)

    def _ratings(self, endpoint: str, since: datetime) -> dict[str, list[str]] | None:
        if self.feedback is None:
            return None
        ratings: dict[str, list[str]] = {}
        for entry in self.feedback(endpoint, since):
            ratings.setdefault(entry.inference_id, []).append(entry.rating)
        return ratings

    def _references(self, challenger: RegisteredVersion, *variants: VariantEvidence) -> dict[str, str]:
        """Event id -> reference text, for the requests that named a reference (by their inference id)."""
        if self.references is None:
            return {}
        texts = self.references(challenger)
        return {event: texts[inference] for variant in variants for event, inference in variant.inference_ids.items()
                if inference in texts}

    def act(self, now: datetime | None = None, alarm: str | None = None) -> RolloutStatus:
        """What a schedule runs: decide, and promote or roll back when the evidence says so. Started by `alarm`
        (a rollback alarm of the candidate's variant in ALARM), it rolls the candidate back."""
        status = self.status(now)
        breach = self._breach(status, alarm) if alarm else None
        if breach is not None:
            status = status.model_copy(update={"decision": breach})
        if status.decision is None:
            return status
        account = self.releaser.approval.release_account
        if status.decision.action == "promote":
            self.promote(account, status.decision.reason)
        elif status.decision.action == "rollback":
            self.rollback(account, status.decision.reason)
        return status

    def _breach(self, status: RolloutStatus, alarm: str) -> Decision | None:
        """The rollback an alarm asks for, when it is a rollback alarm of the challenger's variant and still in
        ALARM; None (and why, in the log) otherwise."""
        if status.challenger is None:
            log.info("alarm %s: no rollout under way on %s", alarm, status.endpoint)
            return None
        specs = self.releaser.alarm_specs([v for v in (status.champion, status.challenger) if v])
        if alarm not in self.releaser.rollback_alarms(specs, status.challenger):
            log.info("alarm %s is no rollback alarm of the challenger %s: the evidence decides", alarm,
                     status.challenger)
            return None
        state, reason = self.releaser.alarms.states([alarm]).get(alarm, ("gone", "the alarm does not exist"))
        if state != "ALARM":
            log.info("alarm %s is %s now (%s): the evidence decides", alarm, state, reason)
            return None
        evidence = status.decision.evidence if status.decision else []
        return Decision(action="rollback", reason=f"alarm {alarm} is in ALARM: {reason}",
                        evidence=[*evidence, Evidence(name=f"alarm {alarm}", champion=None, candidate=None,
                                                      verdict="worse", test=reason[:500])],
                        requests=status.decision.requests if status.decision else 0,
                        elapsed_s=status.decision.elapsed_s if status.decision else 0.0)

    def promote(self, by: str, why: str) -> str:
        """All traffic to the challenger: it becomes champion; the old champion's variant drains and goes."""
        champion, challenger = self._pair()
        candidate = Version.of_registered(self.registry.model_name, challenger.version, challenger.tags)
        releaser = self.releaser
        releaser.guard([candidate.variant])
        outcome = releaser.deployer.deploy(releaser.endpoint, candidate, "all_at_once")
        self.registry.set_alias(T.CHAMPION, challenger.version)
        self.registry.delete_alias(T.CHALLENGER)
        releaser.ledger.tag(challenger.version, {T.RELEASE_STATE: "promoted", T.RELEASE_PREVIOUS: champion.version,
                                                 T.RELEASE_REASON: why[:5000]})
        releaser.ledger.record(challenger.version, by=by, at=now(), state="promoted", outcome=why,
                               note=f"champion was {_named(champion)}", action="rollout")
        return f"v{challenger.version} is champion on {releaser.endpoint} ({outcome.endpoint_config}); " \
               f"{_named(champion)} stays the rollback target"

    def rollback(self, by: str, why: str) -> str:
        """All traffic back to the champion: the challenger's variant goes, and its version says why."""
        target, challenger = self._pair()
        releaser = self.releaser
        outcome = releaser.deployer.deploy(releaser.endpoint, target, "all_at_once")
        releaser.guard([target.variant])
        self.registry.delete_alias(T.CHALLENGER)
        releaser.ledger.tag(challenger.version, {T.RELEASE_STATE: "rolled back", T.RELEASE_REASON: why[:5000]})
        releaser.ledger.record(challenger.version, by=by, at=now(), state="rolled back", outcome=why,
                               note=f"{_named(target)} serves alone", action="rollout")
        done = f"v{challenger.version} rolled back; {_named(target)} serves {releaser.endpoint} alone " \
               f"({outcome.endpoint_config})"
        if self.notify is not None:
            self.notify(f"genaiops: {self.registry.model_name} v{challenger.version} rolled back on "
                        f"{releaser.endpoint}", f"{done}. Why ({by}): {why}")
        return done

    def _pair(self) -> tuple[Version, RegisteredVersion]:
        challenger = self.registry.alias_version(T.CHALLENGER)
        champion = self.releaser.champion(challenger) if challenger is not None else None
        if champion is None or challenger is None:
            found = self.registry.alias_version(T.CHAMPION)
            raise DeploymentError(f"{self.releaser.endpoint}: no rollout under way (champion "
                                  f"{'v' + found.version if found else 'unset'}, challenger "
                                  f"{'v' + challenger.version if challenger else 'unset'})")
        return champion, challenger


def _named(version: Version) -> str:
    return "the base model" if version.version == BASELINE else f"v{version.version}"
