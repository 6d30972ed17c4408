"""What matters per stack, asserted on the synthesized templates (properties, not logical ids)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk.assertions import Match

from infra_cdk.app import STAGES
from infra_cdk.config import EndpointAsCode
from infra_cdk.orchestration import WORK_POOL
from tests.infra.conftest import Synth

LIFECYCLES = ("network", "data", "approvals", "registry", "monitoring", "serving", "orchestration")


def _of_type(document: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in document["Resources"].items() if v["Type"] == kind}


def _literal(value: Any) -> str:
    """The literal parts of a string or an Fn::Join (the references left out)."""
    if isinstance(value, dict) and "Fn::Join" in value:
        return value["Fn::Join"][0].join(p for p in value["Fn::Join"][1] if isinstance(p, str))
    return str(value)


def test_the_app_has_one_stack_per_lifecycle_in_deploy_order(dev: Synth) -> None:
    assert [c.stack_name for c in dev.app.node.children if hasattr(c, "stack_name")] == \
        [f"genaiops-dev-{lifecycle}" for lifecycle in LIFECYCLES]
    assert dev.stack("network") in dev.stack("data").dependencies
    assert {dev.stack("data"), dev.stack("network")} <= set(dev.stack("approvals").dependencies)
    assert {dev.stack("monitoring"), dev.stack("data"), dev.stack("network")} <= set(dev.stack("serving").dependencies)
    assert {dev.stack("approvals"), dev.stack("monitoring")} <= set(dev.stack("orchestration").dependencies)


def test_network_keeps_workloads_private_and_reaches_aws_through_endpoints(dev: Synth) -> None:
    document = dev.json("network")
    subnets = _of_type(document, "AWS::EC2::Subnet")
    assert all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets.values())
    services = {_literal(e["Properties"]["ServiceName"]).rsplit("..", 1)[-1]
                for e in _of_type(document, "AWS::EC2::VPCEndpoint").values()}  # com.amazonaws.<region>.<service>
    assert {"sagemaker.api", "sagemaker.runtime", "sts", "monitoring", "logs", "ecr.api", "ecr.dkr", "secretsmanager",
            "s3"} <= services, services
    gateway = [e for e in _of_type(document, "AWS::EC2::VPCEndpoint").values()
               if e["Properties"].get("VpcEndpointType") == "Gateway"]
    assert len(gateway) == 1  # S3
    dev.template("network").has_resource_properties("AWS::EC2::FlowLog", {"TrafficType": "ALL"})
    dev.template("network").has_resource_properties("AWS::Logs::LogGroup", {"KmsKeyId": Match.any_value()})
    # the interface endpoints take HTTPS from the workloads' group only
    groups = _of_type(document, "AWS::EC2::SecurityGroup")
    [endpoint_group] = [k for k, g in groups.items()
                        if "VPC interface endpoints" in g["Properties"]["GroupDescription"]]
    assert "SecurityGroupIngress" not in groups[endpoint_group]["Properties"]  # no CIDR rule
    [ingress] = [r["Properties"] for r in _of_type(document, "AWS::EC2::SecurityGroupIngress").values()
                 if r["Properties"]["GroupId"] == {"Fn::GetAtt": [endpoint_group, "GroupId"]}]
    assert ingress["FromPort"] == ingress["ToPort"] == 443 and "SourceSecurityGroupId" in ingress


def test_data_buckets_are_kms_encrypted_versioned_tls_only_logged_and_expiring(dev: Synth) -> None:
    document = dev.json("data")
    buckets = _of_type(document, "AWS::S3::Bucket")
    kms_buckets = [b for b in buckets.values()
                   if b["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
                   ["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"]
    assert len(kms_buckets) == 3  # data, artifacts, capture (the access-log bucket is SSE-S3, as S3 requires)
    for bucket in kms_buckets:
        properties = bucket["Properties"]
        assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
        assert properties["LoggingConfiguration"]["LogFilePrefix"]
        assert properties["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"] is True
        assert any("NoncurrentVersionExpiration" in r for r in properties["LifecycleConfiguration"]["Rules"])
    capture = [b for b in kms_buckets if b["Properties"]["LoggingConfiguration"]["LogFilePrefix"] == "capture/"]
    assert capture[0]["Properties"]["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == 30
    for policy in _of_type(document, "AWS::S3::BucketPolicy").values():
        assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                   for s in policy["Properties"]["PolicyDocument"]["Statement"])
    outputs = {o["Description"] for o in document["Outputs"].values() if "Description" in o}
    assert {"GENAIOPS_ARTIFACT_BUCKET", "GENAIOPS_CAPTURE_BUCKET", "GENAIOPS_KMS_KEY_ID",
            "GENAIOPS_SAGEMAKER_ROLE_ARN"} <= outputs


def test_dev_is_disposable_and_prod_is_retained(dev: Synth, prod: Synth) -> None:
    kept = ("AWS::KMS::Key", "AWS::S3::Bucket", "AWS::Logs::LogGroup", "AWS::SecretsManager::Secret",
            "AWS::ECR::Repository")
    for stage, expected in ((dev, "Delete"), (prod, "Retain")):
        for lifecycle in LIFECYCLES:
            document = stage.json(lifecycle)
            for kind in kept:
                for resource in _of_type(document, kind).values():
                    assert resource["DeletionPolicy"] == expected, (stage.stage, lifecycle, kind)
            assert stage.stack(lifecycle).termination_protection is (stage is prod)
    # the approval record: prod keeps the database and the groups
    for lifecycle, kind in (("approvals", "AWS::RDS::DBInstance"), ("registry", "AWS::SageMaker::ModelPackageGroup")):
        assert [r.get("DeletionPolicy") for r in _of_type(prod.json(lifecycle), kind).values()] == ["Retain"]
        assert [r.get("DeletionPolicy") for r in _of_type(dev.json(lifecycle), kind).values()] != ["Retain"]
    assert _of_type(dev.json("data"), "Custom::S3AutoDeleteObjects")  # dev buckets empty themselves on delete
    assert not _of_type(prod.json("data"), "Custom::S3AutoDeleteObjects")
    assert STAGES["prod"].retain and not STAGES["dev"].retain


def test_registry_has_the_groups_and_an_approvers_role_that_changes_status_only(dev: Synth) -> None:
    document = dev.json("registry")
    assert not _of_type(document, "AWS::SageMaker::MlflowTrackingServer")  # the approval server replaces it
    [group] = _of_type(document, "AWS::SageMaker::ModelPackageGroup").values()
    assert group["Properties"]["ModelPackageGroupName"] == "dialogue-summarizer"
    approvers_may_only_change_approval_status(document)


def approvers_may_only_change_approval_status(document: dict[str, Any]) -> None:
    """The approvers' one write: a model package's approval status, and only to Rejected or back to pending."""
    policies = [p for p in _of_type(document, "AWS::IAM::ManagedPolicy").values()
                if any(s.get("Sid") == "ApprovalStatusOnly" for s in p["Properties"]["PolicyDocument"]["Statement"])]
    assert len(policies) == 1, "no approvers policy"
    for statement in policies[0]["Properties"]["PolicyDocument"]["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        writes = [a for a in actions if a.split(":")[1].startswith(("Update", "Create", "Delete", "Put", "Set"))
                  and a != "sagemaker:CreatePresignedMlflowTrackingServerUrl"]  # a sign-in link to the UI
        if statement["Sid"] == "ApprovalStatusOnly":
            assert writes == ["sagemaker:UpdateModelPackage"]
            assert statement.get("Condition") == {"StringEquals": {"sagemaker:ModelApprovalStatus":
                                                               ["Rejected", "PendingManualApproval"]}}, statement
        else:
            assert writes == [], statement
    [role] = [r for r in _of_type(document, "AWS::IAM::Role").values()
              if "approvers" in r["Properties"].get("Description", "")]
    [assume] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert assume["Condition"] == {"Bool": {"aws:MultiFactorAuthPresent": "true"}}


def test_orchestration_runs_a_private_prefect_worker_and_triggers_the_approval_watcher(dev: Synth) -> None:
    document = dev.json("orchestration")
    template = dev.template("orchestration")
    template.has_resource_properties("AWS::ECS::Service", {"LaunchType": "FARGATE", "NetworkConfiguration": {
        "AwsvpcConfiguration": Match.object_like({"AssignPublicIp": "DISABLED"})}})
    pool = yaml.safe_load((Path(__file__).parents[2] / "prefect.yaml").read_text())["definitions"]["work_pool"]["name"]
    assert pool == WORK_POOL
    definitions = _of_type(document, "AWS::ECS::TaskDefinition")
    worker = next(d for d in definitions.values() if d["Properties"]["ContainerDefinitions"][0]["Name"] ==
                  "prefect-worker")
    [container] = worker["Properties"]["ContainerDefinitions"]
    assert container["Command"][:5] == ["prefect", "worker", "start", "--pool", pool]
    assert [s["Name"] for s in container["Secrets"]] == ["PREFECT_API_KEY"]
    assert not any("KEY" in e["Name"] for e in container["Environment"])
    for group in _of_type(document, "AWS::Logs::LogGroup").values():
        assert "KmsKeyId" in group["Properties"] and "RetentionInDays" in group["Properties"]
    rules = {r["Properties"]["EventPattern"]["source"][0] + ("/rollout" if "rollout/" in r["Properties"]["Description"]
                                                             else ""): r["Properties"]
             for r in _of_type(document, "AWS::Events::Rule").values()}
    assert rules["aws.sagemaker"]["EventPattern"] == {
        "source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"],
        "detail": {"ModelPackageGroupName": ["dialogue-summarizer"]}}
    [target] = rules["aws.sagemaker"]["Targets"]
    assert "approval-watch/dialogue-summarizer" in target["Input"] and "DeadLetterConfig" in target
    # a drift alarm the release flow puts on the model's endpoint, whose spec's action is retrain, starts a retrain
    from monitoring.monitor import MonitoringConfig, endpoint_alarms

    retrain = [s.name for s in endpoint_alarms("dialogue-summarizer", ["v1"], "dialogue-summarizer", MonitoringConfig())
               if any(a.kind == "retrain" for a in s.actions)]
    assert retrain and rules["aws.cloudwatch"]["EventPattern"]["detail"] == {"alarmName": retrain,
                                                                           "state": {"value": ["ALARM"]}}
    [target] = rules["aws.cloudwatch"]["Targets"]
    transformer = target["InputTransformer"]
    assert transformer["InputPathsMap"]["detail-alarmName"] == "$.detail.alarmName"
    command = json.loads(transformer["InputTemplate"].replace("<detail-alarmName>", "dialogue-summarizer/embedding-drift")
                         .replace("<time>", "2026-12-01T03:00:00Z"))["containerOverrides"][0]["command"]
    assert command[:4] == ["prefect", "deployment", "run", "retrain/dialogue-summarizer"]
    from pipelines.trigger import Trigger

    tags = Trigger(kind="alarm", name="dialogue-summarizer/embedding-drift").tags()  # as a run it starts is tagged
    assert command[6:] == [part for tag in tags for part in ("--tag", tag)]

    Trigger.model_validate(json.loads(command[5].removeprefix("trigger=")))  # what the retrain flow takes
    assert json.loads(command[5].removeprefix("trigger=")) == {
        "kind": "alarm", "name": "dialogue-summarizer/embedding-drift", "detail": "went into ALARM at 2026-12-01T03:00:00Z"}
    # a rollback alarm of any release variant starts the rollout, which rolls a shadow or A/B candidate back
    rollback = [s.name for s in endpoint_alarms("dialogue-summarizer", ["*"], "dialogue-summarizer", MonitoringConfig())
                if any(a.kind == "rollback" for a in s.actions)]
    assert {n.rsplit("/", 1)[1] for n in rollback} == {"5xx-rate", "model-latency-p99", "empty-output-rate",
                                                      "toxic-output-rate"}
    assert rules["aws.cloudwatch/rollout"]["EventPattern"]["detail"] == {
        "alarmName": [{"wildcard": n} for n in rollback], "state": {"value": ["ALARM"]}}
    [target] = rules["aws.cloudwatch/rollout"]["Targets"]
    command = json.loads(target["InputTransformer"]["InputTemplate"].replace(
        "<detail-alarmName>", "dialogue-summarizer/v2/5xx-rate").replace("<time>", "2026-12-01T03:00:00Z")
    )["containerOverrides"][0]["command"]
    assert command[:4] == ["prefect", "deployment", "run", "rollout/dialogue-summarizer"]
    assert Trigger.model_validate_json(command[5].removeprefix("trigger=")).name == "dialogue-summarizer/v2/5xx-rate"
    # the worker passes the flow roles (one per approval-server account) and their execution role, only to ECS tasks
    roles = {k for k, r in _of_type(document, "AWS::IAM::Role").items()
             if r["Properties"].get("Description", "").startswith("genaiops flow runs")}
    assert len(roles) == 4
    [passing] = [s for p in _of_type(document, "AWS::IAM::Policy").values()
                 for s in p["Properties"]["PolicyDocument"]["Statement"]
                 if s["Action"] == "iam:PassRole" and "ecs-tasks.amazonaws.com" in str(s.get("Condition"))]
    assert {r["Fn::GetAtt"][0] for r in passing["Resource"]} == roles
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    # the work pool's job variables: the roles and the API key's secret here, the private network from the network
    variables = json.dumps(document["Outputs"]["WorkPoolJobVariables"]["Value"])
    assert all(key in variables for key in ("prefect_api_key_secret_arn", "task_role_arn", "execution_role_arn"))
    assert 'assignPublicIp\\":\\"DISABLED' in json.dumps(dev.json("network")["Outputs"]["WorkPoolNetwork"]["Value"])


def test_without_the_prefect_api_the_worker_waits_and_no_trigger_fires(prod: Synth) -> None:
    document = prod.json("orchestration")
    [service] = _of_type(document, "AWS::ECS::Service").values()
    assert service["Properties"]["DesiredCount"] == 0
    assert not _of_type(document, "AWS::Events::Rule")


def test_guarded_endpoint_serves_pinned_versions_with_capture_guardrails_and_scaling(dev: Synth) -> None:
    document = dev.json("serving")
    configs = list(_of_type(document, "AWS::SageMaker::EndpointConfig").values())
    pinned = next(c for c in configs if c["Properties"].get("ShadowProductionVariants"))
    small = next(c for c in configs if not c["Properties"].get("ShadowProductionVariants"))
    # the variant names stay when the pinned versions change, so an update is SageMaker's blue/green with guardrails
    assert [v["VariantName"] for v in pinned["Properties"]["ProductionVariants"]] == ["production"]
    assert [(v["VariantName"], v["InitialVariantWeight"]) for v in pinned["Properties"]["ShadowProductionVariants"]] \
        == [("shadow", 1.0)]  # every request mirrored (shadow_sampling_percent 100)
    assert "KmsKeyId" not in pinned["Properties"]  # ml.g5: hardware-encrypted local storage, SageMaker takes no key
    assert "KmsKeyId" in small["Properties"]  # ml.m5: an EBS volume, encrypted with the platform's key
    capture = pinned["Properties"]["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and "KmsKeyId" in capture
    models = _of_type(document, "AWS::SageMaker::Model")
    for model in models.values():
        assert model["Properties"]["EnableNetworkIsolation"] is True
        assert model["Properties"]["VpcConfig"]["Subnets"]
        assert "model-package/dialogue-summarizer/" in str(model["Properties"]["Containers"])
    endpoints = _of_type(document, "AWS::SageMaker::Endpoint")
    pinned_endpoint = next(e for e in endpoints.values() if e["Properties"]["EndpointName"] == "summarizer-pinned")
    deployment = pinned_endpoint["Properties"]["DeploymentConfig"]
    routing = deployment["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == "CANARY" and routing["CanarySize"] == {"Type": "CAPACITY_PERCENT", "Value": 10}
    rollback = {a["AlarmName"] for a in deployment["AutoRollbackConfiguration"]["Alarms"]}
    assert rollback == {f"summarizer-pinned/{variant}/{alarm}" for variant in ("production", "shadow")
                        for alarm in ("5xx-rate", "model-latency-p99", "empty-output-rate", "toxic-output-rate")}
    dev.template("serving").has_resource_properties("AWS::ApplicationAutoScaling::ScalableTarget", {
        "ResourceId": "endpoint/summarizer-pinned/variant/production", "MinCapacity": 1, "MaxCapacity": 2})
    dev.template("serving").has_resource_properties("AWS::ApplicationAutoScaling::ScalingPolicy", {
        "TargetTrackingScalingPolicyConfiguration": Match.object_like({"TargetValue": 50, "PredefinedMetricSpecification": {
            "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}})})
    names = {g["Properties"]["LogGroupName"] for g in _of_type(document, "AWS::Logs::LogGroup").values()}
    assert names == {"/aws/sagemaker/Endpoints/dialogue-summarizer", "/aws/sagemaker/Endpoints/summarizer-pinned",
                     "/aws/sagemaker/Endpoints/summarizer-small"}


def test_guarded_endpoint_defaults_are_the_deployers() -> None:
    from serving.deployer import AutoscalingConfig, DeploymentConfig

    endpoint, deployment, scaling = EndpointAsCode(name="e", model="m", production=1), DeploymentConfig(), \
        AutoscalingConfig()
    for field in ("instance_type", "instance_count", "shadow_sampling_percent", "canary_percent", "wait_seconds",
                  "bake_seconds", "max_execution_seconds", "capture_sampling_percent"):
        assert getattr(endpoint, field) == getattr(deployment, field), field
    for field in ("min_capacity", "max_capacity", "invocations_per_instance", "scale_in_cooldown_s",
                  "scale_out_cooldown_s"):
        assert getattr(endpoint, field) == getattr(scaling, field), field


def test_monitoring_has_an_encrypted_tls_only_topic_and_a_budget_that_alerts(dev: Synth) -> None:
    template = dev.template("monitoring")
    template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    template.has_resource_properties("AWS::SNS::TopicPolicy", {"PolicyDocument": {"Statement": Match.array_with([
        Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])}})
    [budget] = _of_type(dev.json("monitoring"), "AWS::Budgets::Budget").values()
    assert budget["Properties"]["Budget"]["BudgetLimit"] == {"Amount": STAGES["dev"].budget_usd, "Unit": "USD"}
    assert {n["Notification"]["NotificationType"] for n in budget["Properties"]["NotificationsWithSubscribers"]} == \
        {"ACTUAL", "FORECASTED"}


def test_every_resource_that_takes_tags_carries_the_cost_allocation_tags(dev: Synth) -> None:
    for lifecycle in LIFECYCLES:
        for logical, resource in dev.json(lifecycle)["Resources"].items():
            tags = resource.get("Properties", {}).get("Tags")
            if isinstance(tags, list) and tags and isinstance(tags[0], dict) and "Key" in tags[0]:
                keys = {t["Key"] for t in tags}
                assert {"project", "genaiops:stage", "genaiops:stack"} <= keys, (lifecycle, logical, keys)


def test_every_output_that_names_a_setting_names_one_that_exists(dev: Synth) -> None:
    from pipelines.settings import ENV_PREFIX, Settings

    known = {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields}
    named = {o["Description"].split()[0] for lifecycle in LIFECYCLES for o in dev.json(lifecycle).get("Outputs", {}).values()
             if o.get("Description", "").startswith(ENV_PREFIX)}
    assert named == {"GENAIOPS_SUBNETS", "GENAIOPS_SECURITY_GROUP_IDS", "GENAIOPS_ARTIFACT_BUCKET",
                     "GENAIOPS_CAPTURE_BUCKET", "GENAIOPS_KMS_KEY_ID", "GENAIOPS_SAGEMAKER_ROLE_ARN",
                     "GENAIOPS_MLFLOW_TRACKING_URI", "GENAIOPS_IMAGE", "GENAIOPS_NOTIFY_TOPIC_ARN", "GENAIOPS_AUDIT_BUCKET",
                     "GENAIOPS_MLFLOW_SECRETS_PREFIX"}
    assert named <= known


@pytest.mark.parametrize(("context", "message"), [
    ({"stage": "test"}, r"-c stage=test: one of dev, prod"),
    ({"monitoring": {"alarms": {"5xx": {"threshold": 1}}}}, r"-c monitoring: .*unknown default alarm\(s\) 5xx"),
    ({"endpoints": [{"name": "dialogue-summarizer", "model": "dialogue-summarizer", "production": 1}]},
     r"dialogue-summarizer is the release flow's endpoint"),
    ({"endpoints": [{"name": "e", "model": "other", "production": 1}]}, r"e serves other, not one of the models"),
    ({"prefect_api_url": "prefect.example.org"}, r"not an http\(s\) URL"),
    ({"notify_emails": "ops"}, r"not an email address: ops"),
])
def test_a_context_value_the_app_cannot_use_is_named(context: dict[str, Any], message: str, tmp_path: Path) -> None:
    from infra_cdk.app import AppError, build_app

    stage = context.pop("stage", None)
    with pytest.raises(AppError, match=message):
        build_app(stage=stage, outdir=str(tmp_path), context=context)
