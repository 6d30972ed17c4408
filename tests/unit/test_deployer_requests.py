"""The exact AWS requests of each deployment strategy, checked by botocore's Stubber against the real
SageMaker and Application Auto Scaling service models (moto lacks UpdateEndpoint and drops shadow variants)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from serving.deployer import DeploymentConfig, DeploymentError, SageMakerDeployer, Version

KMS = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
ROLE = "arn:aws:iam::123456789012:role/genaiops-sagemaker"
CAPTURE = "s3://genaiops-capture/summaries"
IMAGE = "763104351884.dkr.ecr.eu-west-1.amazonaws.com/huggingface-pytorch-inference:2.6.0-transformers4.51.3-gpu-py312"
V1 = Version(model="summarizer", version="1", package_uri="s3://genaiops-artifacts/packages/aaa/model.tar.gz",
             digest="a" * 64, image=IMAGE)
V2 = Version(model="summarizer", version="2", package_uri="s3://genaiops-artifacts/packages/bbb/model.tar.gz",
             digest="b" * 64, image=IMAGE)
CONFIG = DeploymentConfig(instance_type="ml.g5.xlarge", instance_count=2, kms_key_id=KMS, subnets=["subnet-1"],
                          security_group_ids=["sg-1"], autoscaling={"min_capacity": 2, "max_capacity": 4},
                          poll_seconds=1, canary_percent=10, wait_seconds=300, bake_seconds=600,
                          ab_candidate_weight=0.2, shadow_sampling_percent=50)
NOW = datetime(2026, 11, 30, tzinfo=UTC)
NOT_FOUND = "ValidationException"


def clients() -> tuple[Any, Any, Stubber, Stubber]:
    session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="eu-west-1")
    sagemaker, scaling = session.client("sagemaker"), session.client("application-autoscaling")
    return sagemaker, scaling, Stubber(sagemaker), Stubber(scaling)


def model_request(version: Version) -> dict[str, Any]:
    return {"ModelName": version.model_name,
            "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": version.package_uri, "Environment": {
                "SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "HF_HUB_OFFLINE": "1"}},
            "ExecutionRoleArn": ROLE, "VpcConfig": {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]},
            "Tags": [{"Key": "genaiops:model", "Value": "summarizer"},
                     {"Key": "genaiops:version", "Value": version.version},
                     {"Key": "genaiops:package-digest", "Value": version.digest},
                     {"Key": "genaiops:build", "Value": "unoptimized"}]}


def variant(version: Version, weight: float) -> dict[str, Any]:
    return {"VariantName": f"v{version.version}", "ModelName": version.model_name, "InstanceType": "ml.g5.xlarge",
            "InitialInstanceCount": 2, "InitialVariantWeight": weight}


CAPTURE_CONFIG = {"EnableCapture": True, "InitialSamplingPercentage": 100, "DestinationS3Uri": CAPTURE,
                  "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                  "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}, "KmsKeyId": KMS}


def endpoint(config: str, status: str = "InService", variants: tuple[str, ...] = ("v1",),
             reason: str | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"EndpointName": "summaries", "EndpointArn": "arn:aws:sagemaker:eu-west-1:123456789012:"
                              "endpoint/summaries", "EndpointConfigName": config, "EndpointStatus": status,
                              "CreationTime": NOW, "LastModifiedTime": NOW,
                              "ProductionVariants": [{"VariantName": v} for v in variants]}
    if reason:
        answer["FailureReason"] = reason
    return answer


TARGET = {"ServiceNamespace": "sagemaker", "ResourceId": "endpoint/summaries/variant/v1",
          "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "MinCapacity": 2, "MaxCapacity": 4}
POLICY = {"PolicyName": "summaries-v1-invocations", "ServiceNamespace": "sagemaker",
          "ResourceId": "endpoint/summaries/variant/v1", "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
          "PolicyType": "TargetTrackingScaling", "TargetTrackingScalingPolicyConfiguration": {
              "TargetValue": 50.0,
              "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}}


def deregistration(stub: Stubber) -> None:
    """What an update does first: read the champion's autoscaling (to put it back on failure), then remove it."""
    stub.add_response("describe_scalable_targets", {"ScalableTargets": [
        {**TARGET, "RoleARN": "arn:aws:iam::123456789012:role/scaling", "CreationTime": NOW}]}, {
        "ServiceNamespace": "sagemaker", "ResourceIds": ["endpoint/summaries/variant/v1"],
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"})
    stub.add_response("describe_scaling_policies", {"ScalingPolicies": [
        {**POLICY, "PolicyARN": "arn:aws:autoscaling:policy/p", "CreationTime": NOW}]}, {
        "ServiceNamespace": "sagemaker", "ResourceId": "endpoint/summaries/variant/v1",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"})
    stub.add_response("deregister_scalable_target", {}, {
        "ServiceNamespace": "sagemaker", "ResourceId": "endpoint/summaries/variant/v1",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount"})


def scaling_requests(stub: Stubber, variants: list[str]) -> None:
    for name in variants:
        resource = f"endpoint/summaries/variant/{name}"
        stub.add_response("register_scalable_target", {}, {
            "ServiceNamespace": "sagemaker", "ResourceId": resource,
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "MinCapacity": 2, "MaxCapacity": 4})
        stub.add_response("put_scaling_policy", {"PolicyARN": "arn:aws:autoscaling:policy"}, {
            "PolicyName": f"summaries-{name}-invocations", "ServiceNamespace": "sagemaker", "ResourceId": resource,
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount", "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": 50.0,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                "ScaleInCooldown": 300, "ScaleOutCooldown": 60}})


def test_a_first_deploy_creates_model_config_and_endpoint_with_kms_vpc_capture_and_autoscaling() -> None:
    sagemaker, scaling, stub, scaling_stub = clients()
    deployer = SageMakerDeployer(sagemaker, CONFIG, role_arn=ROLE, capture_uri=CAPTURE, autoscaling_client=scaling)
    plan = deployer.plan("summaries", V1, "all_at_once")
    stub.add_client_error("describe_endpoint", NOT_FOUND, expected_params={"EndpointName": "summaries"})
    stub.add_client_error("describe_model", NOT_FOUND, expected_params={"ModelName": V1.model_name})
    stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:eu-west-1:123456789012:model/m"},
                      model_request(V1))
    stub.add_client_error("describe_endpoint_config", NOT_FOUND, expected_params={"EndpointConfigName": plan.config_name})
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:eu-west-1:1:endpoint-config/c"}, {
        "EndpointConfigName": plan.config_name, "ProductionVariants": [variant(V1, 1.0)],
        "DataCaptureConfig": CAPTURE_CONFIG,  # no KmsKeyId: ml.g5's local NVMe volume is encrypted by its hardware
        "Tags": [{"Key": "genaiops:endpoint", "Value": "summaries"}, {"Key": "genaiops:strategy", "Value": "all_at_once"}]})
    stub.add_response("create_endpoint", {"EndpointArn": "arn:aws:sagemaker:eu-west-1:1:endpoint/summaries"}, {
        "EndpointName": "summaries", "EndpointConfigName": plan.config_name,
        "Tags": [{"Key": "genaiops:endpoint", "Value": "summaries"}]})
    stub.add_response("describe_endpoint", endpoint(plan.config_name, "Creating"), {"EndpointName": "summaries"})
    stub.add_response("describe_endpoint", endpoint(plan.config_name), {"EndpointName": "summaries"})
    stub.add_response("describe_endpoint", endpoint(plan.config_name), {"EndpointName": "summaries"})
    scaling_requests(scaling_stub, ["v1"])
    with stub, scaling_stub:
        outcome = deployer.apply(plan)
        stub.assert_no_pending_responses()
        scaling_stub.assert_no_pending_responses()
    assert outcome.created == [V1.model_name, plan.config_name, "summaries"]


@pytest.mark.parametrize(("strategy", "production", "shadows", "deployment"), [
    ("ab", [variant(V1, 0.8), variant(V2, 0.2)], None, None),
    ("shadow", [variant(V1, 1.0)], [variant(V2, 0.5)], None),
    ("canary", [variant(V2, 1.0)], None, {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "CANARY", "WaitIntervalInSeconds": 300,
                                            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10}},
            "TerminationWaitInSeconds": 600, "MaximumExecutionTimeoutInSeconds": 7200},
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "summaries/errors"}]}}),
    ("linear", [variant(V2, 1.0)], None, {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": "LINEAR", "WaitIntervalInSeconds": 300,
                                            "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 20}},
            "TerminationWaitInSeconds": 600, "MaximumExecutionTimeoutInSeconds": 7200},
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "summaries/errors"}]}}),
])
def test_an_update_sends_the_strategys_exact_config_and_deployment(
        strategy: Any, production: list[dict[str, Any]], shadows: list[dict[str, Any]] | None,
        deployment: dict[str, Any] | None) -> None:
    sagemaker, scaling, stub, scaling_stub = clients()
    deployer = SageMakerDeployer(sagemaker, CONFIG, role_arn=ROLE, capture_uri=CAPTURE, autoscaling_client=scaling)
    champion = V1 if strategy in ("ab", "shadow") else None
    plan = deployer.plan("summaries", V2, strategy, champion=champion, rollback_alarms=["summaries/errors"])
    stub.add_response("describe_endpoint", endpoint("summaries-old"), {"EndpointName": "summaries"})
    if champion is not None:
        stub.add_response("describe_model", {"ModelName": V1.model_name, "ModelArn": "arn:aws:sagemaker:eu-west-1:1:"
                                             "model/m1", "CreationTime": NOW}, {"ModelName": V1.model_name})
    stub.add_client_error("describe_model", NOT_FOUND, expected_params={"ModelName": V2.model_name})
    stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:eu-west-1:1:model/m2"}, model_request(V2))
    stub.add_client_error("describe_endpoint_config", NOT_FOUND, expected_params={"EndpointConfigName": plan.config_name})
    config: dict[str, Any] = {"EndpointConfigName": plan.config_name, "ProductionVariants": production}
    if shadows:
        config["ShadowProductionVariants"] = shadows
    config.update({"DataCaptureConfig": CAPTURE_CONFIG, "Tags": [
        {"Key": "genaiops:endpoint", "Value": "summaries"}, {"Key": "genaiops:strategy", "Value": strategy}]})
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:eu-west-1:1:endpoint-config/c"},
                      config)
    deregistration(scaling_stub)
    update: dict[str, Any] = {"EndpointName": "summaries", "EndpointConfigName": plan.config_name,
                              "DeploymentConfig": deployment or {
                                  "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "summaries/errors"}]}}}
    stub.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:eu-west-1:1:endpoint/summaries"}, update)
    stub.add_response("describe_endpoint", endpoint(plan.config_name), {"EndpointName": "summaries"})
    stub.add_response("describe_endpoint", endpoint(plan.config_name), {"EndpointName": "summaries"})
    scaling_requests(scaling_stub, [v["VariantName"] for v in production])
    with stub, scaling_stub:
        outcome = deployer.apply(plan)
        stub.assert_no_pending_responses()
        scaling_stub.assert_no_pending_responses()
    assert outcome.endpoint_config == plan.config_name


def test_an_update_sagemaker_rolled_back_fails_removes_what_it_created_and_restores_autoscaling() -> None:
    sagemaker, scaling, stub, scaling_stub = clients()
    deployer = SageMakerDeployer(sagemaker, CONFIG, role_arn=ROLE, capture_uri=CAPTURE, autoscaling_client=scaling)
    plan = deployer.plan("summaries", V2, "canary", rollback_alarms=["summaries/errors"])
    stub.add_response("describe_endpoint", endpoint("summaries-old"), {"EndpointName": "summaries"})
    stub.add_client_error("describe_model", NOT_FOUND, expected_params={"ModelName": V2.model_name})
    stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:eu-west-1:1:model/m2"}, model_request(V2))
    stub.add_client_error("describe_endpoint_config", NOT_FOUND, expected_params={"EndpointConfigName": plan.config_name})
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:eu-west-1:1:endpoint-config/c"},
                      expected_params=None)  # checked exactly above
    deregistration(scaling_stub)
    stub.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:eu-west-1:1:endpoint/summaries"},
                      expected_params=None)  # checked exactly above
    rolled_back = endpoint("summaries-old", reason="Alarm summaries/errors went into ALARM during baking")
    stub.add_response("describe_endpoint", rolled_back, {"EndpointName": "summaries"})  # the waiter: InService
    stub.add_response("describe_endpoint", rolled_back, {"EndpointName": "summaries"})
    stub.add_response("describe_endpoint", rolled_back, {"EndpointName": "summaries"})  # undo: no update runs
    stub.add_response("describe_endpoint", rolled_back, {"EndpointName": "summaries"})  # undo: the config is unused
    stub.add_response("delete_endpoint_config", {}, {"EndpointConfigName": plan.config_name})
    stub.add_response("describe_endpoint", rolled_back, {"EndpointName": "summaries"})  # undo: is the model in use?
    stub.add_response("describe_endpoint_config", {
        "EndpointConfigName": "summaries-old", "EndpointConfigArn": "arn:aws:sagemaker:eu-west-1:1:endpoint-config/o",
        "ProductionVariants": [variant(V1, 1.0)], "CreationTime": NOW}, {"EndpointConfigName": "summaries-old"})
    stub.add_response("delete_model", {}, {"ModelName": V2.model_name})
    scaling_stub.add_response("register_scalable_target", {}, TARGET)  # the champion scales again
    scaling_stub.add_response("put_scaling_policy", {"PolicyARN": "arn:aws:autoscaling:policy/p"}, POLICY)
    with stub, scaling_stub, pytest.raises(DeploymentError,
                                           match="rolled the update back: Alarm summaries/errors went into ALARM"):
        deployer.apply(plan)
    stub.assert_no_pending_responses()
    scaling_stub.assert_no_pending_responses()


def test_an_update_still_running_when_the_wait_ends_keeps_its_models_and_configs() -> None:
    sagemaker, _, stub, _ = clients()
    deployer = SageMakerDeployer(sagemaker, CONFIG.model_copy(update={"autoscaling": None, "timeout_seconds": 1}),
                                 role_arn=ROLE, capture_uri=CAPTURE)
    plan = deployer.plan("summaries", V2, "all_at_once")
    stub.add_response("describe_endpoint", endpoint("summaries-old"), {"EndpointName": "summaries"})
    stub.add_client_error("describe_model", NOT_FOUND, expected_params={"ModelName": V2.model_name})
    stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:eu-west-1:1:model/m2"}, expected_params=None)
    stub.add_client_error("describe_endpoint_config", NOT_FOUND, expected_params={"EndpointConfigName": plan.config_name})
    stub.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:eu-west-1:1:endpoint-config/c"},
                      expected_params=None)
    stub.add_response("update_endpoint", {"EndpointArn": "arn:aws:sagemaker:eu-west-1:1:endpoint/summaries"},
                      expected_params=None)
    updating = {**endpoint("summaries-old", "Updating"), "PendingDeploymentSummary": {
        "EndpointConfigName": plan.config_name}}
    stub.add_response("describe_endpoint", updating, {"EndpointName": "summaries"})  # the waiter gives up
    stub.add_response("describe_endpoint", updating, {"EndpointName": "summaries"})  # undo sees it still running
    with stub, pytest.raises(DeploymentError, match="Max attempts exceeded"):
        deployer.apply(plan)
    stub.assert_no_pending_responses()  # no delete of the config or the model the update is moving to


def test_ab_and_shadow_need_a_champion_and_names_fit_sagemaker() -> None:
    deployer = SageMakerDeployer(boto3.client("sagemaker", region_name="eu-west-1", aws_access_key_id="x",
                                              aws_secret_access_key="x"), CONFIG)
    with pytest.raises(DeploymentError, match="ab needs a champion"):
        deployer.plan("summaries", V2, "ab")
    long = Version(model="a-very-long-registered-model-name-that-goes-on-and-on", version="123", package_uri="s3://b/k",
                   digest="c" * 64, image=IMAGE)
    assert len(long.model_name) <= 63
    assert len(deployer.plan("an-endpoint-with-a-long-name-of-fifty-characters-x", long, "all_at_once")
               .config_name) <= 63


def test_a_deployment_that_finds_its_endpoint_mid_operation_waits_for_it_then_does_nothing_twice() -> None:
    sagemaker, _, stub, _ = clients()
    deployer = SageMakerDeployer(sagemaker, CONFIG.model_copy(update={"autoscaling": None}), role_arn=ROLE,
                                 capture_uri=CAPTURE)
    plan = deployer.plan("summaries", V1, "all_at_once")
    stub.add_response("describe_endpoint", endpoint(plan.config_name, "Creating"), {"EndpointName": "summaries"})
    stub.add_response("describe_endpoint", endpoint(plan.config_name), {"EndpointName": "summaries"})  # the waiter
    stub.add_response("describe_endpoint", endpoint(plan.config_name), {"EndpointName": "summaries"})
    with stub:
        outcome = deployer.apply(plan)  # a crashed run's creation, now in service: nothing is created again
        stub.assert_no_pending_responses()
    assert not outcome.changed and outcome.created == []


def test_the_volume_key_goes_only_to_instance_types_without_local_storage() -> None:
    """SageMaker refuses a KmsKeyId for an instance type with local NVMe storage (encrypted by its hardware)."""
    sagemaker = boto3.client("sagemaker", region_name="eu-west-1")
    for instance_type, keyed in (("ml.g5.xlarge", False), ("ml.p4d.24xlarge", False), ("ml.m5.xlarge", True),
                                 ("ml.inf2.xlarge", True), ("ml.c5d.xlarge", False)):
        config = CONFIG.model_copy(update={"instance_type": instance_type})
        plan = SageMakerDeployer(sagemaker, config, role_arn=ROLE, capture_uri=CAPTURE).plan("summaries", V1,
                                                                                              "all_at_once")
        assert ("KmsKeyId" in plan.endpoint_config) is keyed, instance_type
        assert plan.endpoint_config["DataCaptureConfig"]["KmsKeyId"] == KMS  # captured data is always encrypted
