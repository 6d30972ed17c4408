"""The whole lifecycle in one flow run (`genaiops run`, what `make run` runs on the local backend).

retrain → gate → register → approval → release request → shadow release → held-out traffic → rollout
decision → promote (or roll back). Every stage is the platform's own: the retrain, approval-watch and release
flows, the approval server, the deployer and the SageMaker API (the local control plane on a laptop), boto3's
runtime client, the rollout decision. Every stage is idempotent, so a second run with nothing new reuses all of it
and says so.

The approval is a person's job. With `approval.demo` (the default), the run makes it itself as the demo approver
account, through the same approval server a person uses (so the policy, the server's stamp and the audit log all
apply), labelled a demo approval in its note; with `approval.demo: false` the run stops at
`PendingManualApproval`, and the next run after a person approves in the MLflow UI carries on from there.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from contracts import tags as T
from model_registry.mlflow_registry import RegisteredVersion
from pipelines.backends import audit_spec, make_registry, make_runtime, make_store, runtime_url
from pipelines.flows import RetrainResult, approval_watch, retrain
from pipelines.flows.monitor import NoEndpointError, dashboard
from pipelines.flows.release import make_rollout, release
from pipelines.offline import go_offline
from pipelines.reliability import expected, quiet_expected_failures
from pipelines.settings import PipelineConfig, Settings, load_settings
from serving.promotion import Rollout, RolloutStatus
from serving.traffic import Sent, send, until_mirrored
from steps.data import load_prepared

DEMO_NOTE = ("DEMO APPROVAL: made by `genaiops run` (make run) as the demo approver, not a person's review; "
             "set approval.demo: false to approve in the MLflow UI yourself")


class DemoApprovalError(ValueError):
    """A demo approval was asked for where approvals are people's (a shared registry)."""


expected(DemoApprovalError)
quiet_expected_failures()


class Stage(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    outcome: str
    reused: bool = False


class LifecycleResult(BaseModel):
    """What the run did, stage by stage, and where it stopped if it did."""

    model_config = ConfigDict(frozen=True)
    retrain: RetrainResult
    stages: list[Stage]
    stopped: str | None = None
    endpoint: str | None = None
    endpoint_url: str | None = None
    champion: str | None = None
    dashboard: str | None = None

    @property
    def reused(self) -> bool:
        return all(stage.reused for stage in self.stages)


@contextmanager
def _signed_in(user: str, password: str) -> Iterator[None]:
    """MLflow's client reads who it is from the environment at each request."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user, password
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@task(name="demo-approval", cache_policy=NO_CACHE)
def demo_approval(settings: Settings, config: PipelineConfig, version: str) -> RegisteredVersion:
    """Approve `version` as the demo approver through the approval server, as a person would in the UI."""
    from mlflow import MlflowClient

    from model_registry.auth_setup import parse_passwords
    from pipelines.auth_server import auth_server

    account = config.approval.demo_account
    if not settings.tracking_uri.startswith("sqlite:"):
        raise DemoApprovalError(f"approval.demo approves through an approval server over this workspace's store; "
                         f"{settings.tracking_uri} is a shared registry, where approvals are people's: set "
                         "approval.demo: false")
    given = parse_passwords(settings.ui_passwords.get_secret_value()) if settings.ui_passwords else {}
    logger = get_run_logger()
    logger.info("starting the approval server to approve v%s as %s (a demo approval)", version, account)
    with auth_server(settings.root / "auth", approval=config.approval, tracking_uri=settings.tracking_uri,
                     artifact_root=settings.mlflow_artifact_root, audit=audit_spec(settings), passwords=given) as (
            url, passwords), _signed_in(account, passwords[account]):
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        client.set_model_version_tag(config.model_name, version, T.APPROVAL_NOTE, DEMO_NOTE)
        client.set_model_version_tag(config.model_name, version, T.APPROVAL_STATUS, T.APPROVED)
    return make_registry(settings, config).get_version(version)


@task(name="held-out-traffic", cache_policy=NO_CACHE)
def drive(settings: Settings, config: PipelineConfig, rollout: Rollout, status: RolloutStatus) -> tuple[RolloutStatus, Sent]:
    """Held-out records through boto3's runtime client until the evidence decides (or a bound is reached)."""
    logger = get_run_logger()
    registry = make_registry(settings, config)
    challenger = registry.alias_version(T.CHALLENGER)
    assert challenger is not None and status.decision is not None
    records = load_prepared(make_store(settings), challenger.tags[T.DATASET_HASH]).splits["test"]
    if not records:
        logger.warning("v%s's dataset has no held-out records to send", challenger.version)
        return status, Sent()
    runtime = make_runtime(settings)
    sent, budget = Sent(), 5 * max(config.rollout.min_requests, len(records))
    offset = 0
    while status.decision is not None and status.decision.action == "wait" and sent.requests < budget:
        size = max(5, min(len(records), config.rollout.min_requests - status.decision.requests))
        batch = [records[(offset + i) % len(records)] for i in range(size)]
        offset += size
        sent += send(runtime, status.endpoint, batch, config.data.template, progress=logger.info)
        if status.strategy == "shadow":
            until_mirrored(rollout, status, logger.info)
        status = rollout.status()
        if status.decision is not None:
            logger.info("rollout: %s (%d paired requests, %.0f s): %s", status.decision.action,
                        status.decision.requests, status.decision.elapsed_s, status.decision.reason)
    return status, sent


@flow(name="lifecycle")
def lifecycle(config: PipelineConfig | None = None) -> LifecycleResult:
    """Retrain, approve (a demo approval, or a person's), release in shadow, drive held-out traffic, decide."""
    go_offline()
    config = config or PipelineConfig()
    settings = load_settings()
    logger = get_run_logger()
    trained = retrain(config)
    stages = [Stage(name="retrain", outcome=f"v{trained.version} registered, gate {trained.gate}"
                    + (": inputs unchanged, the existing version reused" if trained.reused else ""),
                    reused=trained.reused)]
    registry = make_registry(settings, config)

    def result(stopped: str | None = None, **more: object) -> LifecycleResult:
        return LifecycleResult(retrain=trained, stages=stages, stopped=stopped, **more)

    version = registry.get_version(trained.version)
    if version.status == T.PENDING and not config.approval.demo:
        return result(f"v{version.version} is {T.PENDING}: approve it in the MLflow UI, then run again")
    if version.status == T.PENDING:
        version = demo_approval(settings, config, version.version)
        stages.append(Stage(name="approval", outcome=f"{version.status} by {version.tags.get(T.APPROVED_BY)} "
                                                     "(a DEMO approval, through the approval server)"))
    else:
        by = version.tags.get(T.APPROVED_BY, "?")
        demo = " (a DEMO approval)" if version.tags.get(T.APPROVAL_NOTE) == DEMO_NOTE else ""
        stages.append(Stage(name="approval", outcome=f"{version.status} by {by}{demo}", reused=True))
    if version.status != T.APPROVED:
        return result(f"v{version.version} is {version.status}: it is not released")

    decisions = approval_watch(config)
    version = registry.get_version(version.version)
    if version.status != T.APPROVED:  # the watcher sent it back: the approval does not stand
        return result(f"v{version.version} went back to {version.status}: {version.tags.get(T.APPROVAL_INVALID, '')}")
    mine = next((d for d in decisions if d["version"] == version.version), {"action": "", "detail": ""})
    stages.append(Stage(name="release request", outcome=f"v{version.version}: {mine['action'] or 'already released'}"
                        + (f" ({version.tags[T.RELEASE_REQUEST]})" if T.RELEASE_REQUEST in version.tags else ""),
                        reused=mine["action"] != "release requested"))

    outcomes = release(config)
    for outcome in outcomes:
        stages.append(Stage(name="release", outcome=f"v{outcome.version} {outcome.state}, {outcome.strategy}: "
                                                    f"{outcome.detail}"))
    if any(o.state == "failed" for o in outcomes):
        return result("the release failed: " + "; ".join(o.detail for o in outcomes if o.state == "failed"))

    rollout = make_rollout(settings, config, logger.info)
    status = rollout.status()
    if status.decision is not None:
        status, sent = drive(settings, config, rollout, status)
        stages.append(Stage(name="traffic", outcome=f"{sent.requests} held-out requests through boto3's "
                                                    f"sagemaker-runtime client ({sent.failed} failed)"))
        assert status.decision is not None
        if status.decision.action == "wait":
            stages.append(Stage(name="rollout", outcome=f"waits: {status.decision.reason}; "
                                                        "`genaiops rollout status` follows it"))
        else:
            done = rollout.promote if status.decision.action == "promote" else rollout.rollback
            stages.append(Stage(name="rollout", outcome=f"{status.decision.action}: {status.decision.reason}"))
            stages.append(Stage(name="serving", outcome=done(config.approval.release_account, status.decision.reason)))
    else:
        stages.append(Stage(name="rollout", outcome=f"none under way: {status.endpoint} serves "
                                                    f"{status.champion or 'nothing'}", reused=True))
    return _where(settings, config, result(), status.endpoint)


def _where(settings: Settings, config: PipelineConfig, done: LifecycleResult, endpoint: str) -> LifecycleResult:
    champion = make_registry(settings, config).alias_version(T.CHAMPION)
    found = {"endpoint": endpoint, "champion": champion.version if champion else None}
    try:
        page = dashboard(settings, config, endpoint, hours=1)
    except NoEndpointError:
        return done.model_copy(update=found)
    return done.model_copy(update={**found, "endpoint_url": runtime_url(settings), "dashboard": page})
