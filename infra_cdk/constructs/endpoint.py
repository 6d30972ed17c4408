"""`GuardedEndpoint`: a SageMaker endpoint kept as code, with the guardrails the deployer gives every release."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
from aws_cdk import aws_applicationautoscaling as autoscaling
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from contracts.instances import has_local_storage
from infra_cdk.config import EndpointAsCode
from infra_cdk.constructs.nag import acknowledge

LOCAL_STORAGE = ("The instance type has local NVMe storage, which its hardware encrypts; SageMaker refuses a KmsKeyId "
                 "for it. Captured data is still encrypted with the platform's key.")


class GuardedEndpoint(Construct):
    """Pinned model package versions behind one endpoint: a production variant and an optional shadow variant, in
    the platform's VPC with network isolation, captured to the capture bucket under the platform's key, updated
    by blue/green canary with the rollback alarms watching, and scaled on invocations per instance."""

    def __init__(self, scope: Construct, id: str, *, spec: EndpointAsCode, role: iam.IRole, key: kms.IKey,
                 capture: s3.IBucket, subnets: Sequence[str], security_groups: Sequence[str],
                 rollback_alarms: Sequence[str]) -> None:
        super().__init__(scope, id)
        stack = cdk.Stack.of(self)
        self.spec = spec

        def model(version: int) -> sagemaker.CfnModel:
            return sagemaker.CfnModel(
                self, f"ModelV{version}", execution_role_arn=role.role_arn, enable_network_isolation=True,
                containers=[sagemaker.CfnModel.ContainerDefinitionProperty(model_package_name=(
                    f"arn:{stack.partition}:sagemaker:{stack.region}:{stack.account}:"
                    f"model-package/{spec.group}/{version}"))],
                vpc_config=sagemaker.CfnModel.VpcConfigProperty(subnets=list(subnets),
                                                                security_group_ids=list(security_groups)))

        def variant(version: int, name: str, weight: float) -> sagemaker.CfnEndpointConfig.ProductionVariantProperty:
            return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                variant_name=name, model_name=model(version).attr_model_name, instance_type=spec.instance_type,
                initial_instance_count=spec.instance_count, initial_variant_weight=weight)

        production, *shadow = spec.variants
        self.config = sagemaker.CfnEndpointConfig(
            self, "Config",
            production_variants=[variant(spec.production, production, 1.0)],
            # a shadow variant's weight is the share of requests mirrored to it, as the deployer sets it
            shadow_production_variants=[variant(spec.shadow, shadow[0], spec.shadow_sampling_percent / 100.0)]
            if spec.shadow else None,
            kms_key_id=None if has_local_storage(spec.instance_type) else key.key_arn,
            data_capture_config=sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
                enable_capture=spec.capture_sampling_percent > 0,
                initial_sampling_percentage=spec.capture_sampling_percent,
                destination_s3_uri=f"s3://{capture.bucket_name}/{spec.name}", kms_key_id=key.key_arn,
                capture_options=[sagemaker.CfnEndpointConfig.CaptureOptionProperty(capture_mode=m)
                                 for m in ("Input", "Output")],
                capture_content_type_header=sagemaker.CfnEndpointConfig.CaptureContentTypeHeaderProperty(
                    json_content_types=["application/json"])))
        if has_local_storage(spec.instance_type):
            acknowledge(self.config, **{"AwsSolutions-SM2": LOCAL_STORAGE,
                                        "HIPAA.Security-SageMakerEndpointConfigurationKMSKeyConfigured": LOCAL_STORAGE,
                                        "NIST.800.53.R5-SageMakerEndpointConfigurationKMSKeyConfigured": LOCAL_STORAGE})
        self.endpoint = sagemaker.CfnEndpoint(
            self, "Endpoint", endpoint_name=spec.name, endpoint_config_name=self.config.attr_endpoint_config_name,
            deployment_config=sagemaker.CfnEndpoint.DeploymentConfigProperty(
                blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
                    traffic_routing_configuration=sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(
                        type="CANARY", wait_interval_in_seconds=spec.wait_seconds,
                        canary_size=sagemaker.CfnEndpoint.CapacitySizeProperty(type="CAPACITY_PERCENT",
                                                                               value=spec.canary_percent)),
                    termination_wait_in_seconds=spec.bake_seconds,
                    maximum_execution_timeout_in_seconds=spec.max_execution_seconds),
                auto_rollback_configuration=sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
                    alarms=[sagemaker.CfnEndpoint.AlarmProperty(alarm_name=a) for a in rollback_alarms])
                if rollback_alarms else None))
        target = autoscaling.CfnScalableTarget(
            self, "Scaling", service_namespace="sagemaker", scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            resource_id=f"endpoint/{spec.name}/variant/{production}", min_capacity=spec.min_capacity,
            max_capacity=spec.max_capacity)
        target.node.add_dependency(self.endpoint)
        autoscaling.CfnScalingPolicy(
            self, "InvocationsPerInstance", policy_name=f"{spec.name}-invocations-per-instance",
            policy_type="TargetTrackingScaling", scaling_target_id=target.ref,
            target_tracking_scaling_policy_configuration=autoscaling.CfnScalingPolicy
            .TargetTrackingScalingPolicyConfigurationProperty(
                target_value=spec.invocations_per_instance, scale_in_cooldown=spec.scale_in_cooldown_s,
                scale_out_cooldown=spec.scale_out_cooldown_s,
                predefined_metric_specification=autoscaling.CfnScalingPolicy.PredefinedMetricSpecificationProperty(
                    predefined_metric_type="SageMakerVariantInvocationsPerInstance")))
