"""The CDK app: `cdk synth` / `cdk deploy` (cdk.json runs `python -m infra_cdk.app`), checked by cdk-nag.

Stacks by lifecycle, deployed in this order (each takes what it needs from the ones before it as props):
network → data → approvals → registry → monitoring → serving → orchestration. `-c approvals_domain=...` names
where approvers sign in (and `-c approvals_certificate_arn=...` its ACM certificate; without one, a certificate is
requested for the domain and validated by DNS). `-c stage=prod` picks the stage (default dev);
`-c models=a,b` the registered models (default dialogue-summarizer); `-c endpoints=<JSON list>` the endpoints
kept as code (`EndpointAsCode`); `-c monitoring=<JSON>` the pipeline config's `monitoring` section;
`-c prefect_api_url=...` the Prefect API the worker polls; `-c notify_emails=a@x.org,b@x.org` who the notification
topic (failed runs, versions waiting for approval, alarms, budget alerts) emails.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import aws_cdk as cdk
from aws_cdk import Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from cdk_nag import AwsSolutionsChecks, HIPAASecurityChecks, NIST80053R5Checks

from contracts.names import release_endpoint
from infra_cdk.approvals import ApprovalStack
from infra_cdk.config import EndpointAsCode, StageProps
from infra_cdk.constructs.nag import ScopedChecks
from infra_cdk.data import DataStack
from infra_cdk.monitoring import MonitoringStack
from infra_cdk.network import NetworkStack
from infra_cdk.orchestration import OrchestrationStack
from infra_cdk.registry import RegistryStack
from infra_cdk.serving import ServingStack
from monitoring.monitor import MonitoringConfig

# Feature flags live here rather than in cdk.json, so tests and `cdk synth` build the same app.
FEATURE_FLAGS = {
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,  # a bucket policy, not the legacy ACL
    "@aws-cdk/aws-ec2:restrictDefaultSecurityGroup": True,
    "@aws-cdk/aws-iam:minimizePolicies": True,
    "@aws-cdk/core:defaultCrossStackReferences": "strong",  # a producer keeps what a consumer still imports
}

STAGES: dict[str, StageProps] = {
    "dev": StageProps(retain=False, nat_gateways=1, noncurrent_days=30, capture_days=30, access_log_days=30,
                      log_days=30, budget_usd=500),
    "prod": StageProps(retain=True, nat_gateways=2, max_azs=3, noncurrent_days=365, capture_days=90,
                       access_log_days=365, log_days=365, db_instance="m7g.large", audit_days=2555, worker_cpu=1024,
                       worker_memory_mib=2048, budget_usd=5000),
}
DEFAULT_MODELS = ("dialogue-summarizer",)
RETENTION = {30: logs.RetentionDays.ONE_MONTH, 90: logs.RetentionDays.THREE_MONTHS,
             365: logs.RetentionDays.ONE_YEAR}


class AppError(ValueError):
    """A context value the app cannot build from; the message names it."""


def _context(app: cdk.App, name: str, default: Any) -> Any:
    value = app.node.try_get_context(name)
    if value is None:
        return default
    if isinstance(value, str) and name in ("endpoints", "monitoring"):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise AppError(f"-c {name}: not JSON ({exc})") from exc
    return value


def build_app(*, stage: str | None = None, outdir: str | None = None, context: dict[str, Any] | None = None) -> cdk.App:
    """All stacks of one stage; per-stage differences are the keyword-only props of `STAGES`."""
    app = cdk.App(outdir=outdir, analytics_reporting=False, context={**FEATURE_FLAGS, **(context or {})})
    stage = stage or str(app.node.try_get_context("stage") or "dev")
    if stage not in STAGES:
        raise AppError(f"-c stage={stage}: one of {', '.join(STAGES)}")
    props = STAGES[stage]
    models = _context(app, "models", ",".join(DEFAULT_MODELS))
    models = [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()]
    try:
        endpoints = [EndpointAsCode.model_validate(e) for e in _context(app, "endpoints", [])]
    except ValueError as exc:
        raise AppError(f"-c endpoints: {exc}".replace("\n", "; ")) from exc
    for endpoint in endpoints:
        if endpoint.model not in models:
            raise AppError(f"-c endpoints: {endpoint.name} serves {endpoint.model}, not one of the models "
                           f"({', '.join(models)})")
        if endpoint.name in {release_endpoint(m) for m in models}:
            raise AppError(f"-c endpoints: {endpoint.name} is the release flow's endpoint of a model; "
                           "an endpoint kept as code needs a name of its own")
    monitoring = _context(app, "monitoring", {})
    try:
        MonitoringConfig.model_validate(monitoring)
    except ValueError as exc:
        raise AppError(f"-c monitoring: {exc}".replace("\n", "; ")) from exc
    api_url = _context(app, "prefect_api_url", None)
    if api_url is not None and not re.fullmatch(r"https?://\S+", str(api_url)):
        raise AppError(f"-c prefect_api_url={api_url}: not an http(s) URL")
    emails = [e.strip() for e in str(_context(app, "notify_emails", "")).split(",") if e.strip()]
    bad = [e for e in emails if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", e)]
    if bad:
        raise AppError(f"-c notify_emails: not an email address: {', '.join(bad)}")
    env = cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION"))
    log_days = RETENTION[min(RETENTION, key=lambda d: abs(d - props.log_days))]

    def stack_props(name: str, description: str) -> dict[str, Any]:
        return {"env": env, "termination_protection": props.retain,
                "description": f"genaiops {stage} {name}: {description}"}

    network = NetworkStack(app, f"genaiops-{stage}-network", cidr=props.cidr, max_azs=props.max_azs,
                           nat_gateways=props.nat_gateways, retain=props.retain, log_days=log_days,
                           **stack_props("network", "private subnets, flow logs, VPC endpoints"))
    data = DataStack(app, f"genaiops-{stage}-data", vpc=network.vpc, retain=props.retain,
                     noncurrent_days=props.noncurrent_days, capture_days=props.capture_days,
                     access_log_days=props.access_log_days,
                     **stack_props("data", "KMS key, data, artifact and capture buckets, SageMaker execution role"))
    domain = str(_context(app, "approvals_domain", f"approvals-{stage}.genaiops.example.com"))
    if not re.fullmatch(r"(?=.{4,200}$)([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}", domain):
        raise AppError(f"-c approvals_domain={domain}: not a DNS name")
    certificate = _context(app, "approvals_certificate_arn", None)
    if certificate is not None and not str(certificate).startswith("arn:"):
        raise AppError(f"-c approvals_certificate_arn={certificate}: not an ACM certificate ARN")
    approvals = ApprovalStack(app, f"genaiops-{stage}-approvals", stage=stage, vpc=network.vpc,
                              workloads=network.workloads, subnets=network.workload_subnets, artifacts=data.artifacts,
                              artifact_access=data.artifact_access, key=data.key, sagemaker_role=data.execution_role,
                              domain=domain, certificate_arn=certificate, retain=props.retain, log_days=log_days,
                              db_instance=props.db_instance, multi_az=props.retain, audit_days=props.audit_days,
                              access_log_days=props.access_log_days,
                              **stack_props("approvals", "the approval server: ECS Fargate, RDS PostgreSQL, "
                                                         "Cognito sign-in, audit log"))
    registry = RegistryStack(app, f"genaiops-{stage}-registry", models=models, retain=props.retain,
                             approver_principals=[iam.AccountRootPrincipal()],
                             **stack_props("registry", "model package groups, approvers"))
    monitoring_stack = MonitoringStack(app, f"genaiops-{stage}-monitoring", stage=stage, retain=props.retain,
                                       endpoints=endpoints, monitoring=monitoring, budget_usd=props.budget_usd,
                                       emails=emails,
                                       **stack_props("monitoring", "notifications, budget, alarms, dashboards"))
    serving = ServingStack(app, f"genaiops-{stage}-serving", models=models, endpoints=endpoints,
                           role=data.execution_role, retain=props.retain, log_days=log_days,
                           key=data.key, capture=data.capture, vpc=network.vpc, subnets=network.workload_subnets,
                           security_group=network.workloads,
                           rollback_alarms={n: a.rollback_alarms() for n, a in monitoring_stack.endpoints.items()},
                           **stack_props("serving", "endpoints kept as code, endpoint log groups"))
    orchestration = OrchestrationStack(
        app, f"genaiops-{stage}-orchestration", stage=stage, models=models, vpc=network.vpc,
        subnets=network.workload_subnets, security_group=network.workloads, bucket_access=data.pipeline_access,
        execution_role=data.execution_role,
        tracking_url=approvals.tracking_url, account_secrets=approvals.secrets, audit=approvals.audit,
        approvals_key=approvals.key,
        topic=monitoring_stack.topic,
        model_package_groups={m: g.model_package_group_name for m, g in registry.groups.items()}, monitoring=monitoring,
        prefect_api_url=api_url, topic_key=monitoring_stack.topic_key,
        retain=props.retain, log_days=log_days, worker_cpu=props.worker_cpu, worker_memory_mib=props.worker_memory_mib,
        **stack_props("orchestration", "Prefect worker on ECS Fargate, flow roles, approval triggers"))
    serving.add_stack_dependency(monitoring_stack)
    for lifecycle, stack in (("network", network), ("data", data), ("approvals", approvals), ("registry", registry),
                             ("monitoring", monitoring_stack), ("serving", serving),
                             ("orchestration", orchestration)):
        cdk.Tags.of(stack).add("genaiops:stack", lifecycle)  # cost allocation per lifecycle
    # The stacks that hold data or serve it carry the HIPAA and NIST 800-53 R5 packs as well as AwsSolutions.
    regulated = [data, approvals, serving]
    Validations.of(app).add_plugins(AwsSolutionsChecks(app), ScopedChecks(HIPAASecurityChecks(), regulated),
                                    ScopedChecks(NIST80053R5Checks(), regulated))
    cdk.Tags.of(app).add("project", "genaiops")
    cdk.Tags.of(app).add("genaiops:stage", stage)
    return app


def main() -> None:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    try:
        app = build_app()
    except AppError as exc:
        raise SystemExit(f"genaiops infra: {exc}") from None
    app.synth()


if __name__ == "__main__":
    main()
