"""The one deployer: a model version's package onto a SageMaker endpoint, with boto3's `sagemaker` client only.

The same code deploys to SageMaker and to the local control plane (`local_aws.control_plane`);
only the client's `endpoint_url` differs. A deployment is planned first (`plan`: the exact
requests, named from model, version and package digest), then carried out (`apply`):

- `all_at_once`: the candidate takes all traffic (a first deploy creates the endpoint);
- `ab`: champion and candidate as production variants with weights;
- `shadow`: the champion serves, the candidate is a shadow variant that gets a sampled copy;
- `canary`, `linear`: the candidate replaces the champion through a blue/green deployment with
  guardrails: traffic moves in a canary or linear steps, bakes, and rolls back on its own when one
  of the endpoint's rollback alarms goes into ALARM.

Re-running a deployment that is in place creates nothing. A deployment that fails, or that
SageMaker rolled back, removes the models and endpoint configs it created, leaves the old config
serving, and raises `DeploymentError` with SageMaker's reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts import tags as T
from contracts.instances import has_local_storage
from contracts.names import Strategy, resource_name
from model_registry.sagemaker_mirror import model_data

log = logging.getLogger(__name__)

LOCAL_ROLE = "arn:aws:iam::000000000000:role/genaiops-local-sagemaker"
IN_PROGRESS = ("Creating", "Updating", "SystemUpdating", "RollingBack")


class DeploymentError(RuntimeError):
    """The deployment did not end with the endpoint serving what it asked for; the message says why."""


class AutoscalingConfig(BaseModel):
    """Target tracking on invocations per instance (application-autoscaling; aws backend)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    min_capacity: int = Field(1, ge=1)
    max_capacity: int = Field(2, ge=1)
    invocations_per_instance: float = Field(50.0, gt=0, description="the target of SageMakerVariantInvocationsPerInstance")
    scale_in_cooldown_s: int = Field(300, ge=0)
    scale_out_cooldown_s: int = Field(60, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        if self.max_capacity < self.min_capacity:
            raise ValueError(f"max_capacity {self.max_capacity} is below min_capacity {self.min_capacity}")
        return self


class DeploymentConfig(BaseModel):
    """How versions go onto endpoints (the `deployment` section of a pipeline config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = Field(1, ge=1)
    ab_candidate_weight: float = Field(0.1, gt=0, lt=1, description="ab: the candidate's share of the traffic")
    shadow_sampling_percent: float = Field(100.0, gt=0, le=100, description="shadow: share of requests mirrored")
    canary_percent: int = Field(10, ge=1, le=50, description="canary: the share of capacity that takes traffic first")
    linear_step_percent: int = Field(20, ge=10, le=50, description="linear: the share moved at each step")
    wait_seconds: int = Field(300, ge=0, le=3600, description="between traffic steps, watching the alarms")
    bake_seconds: int = Field(600, ge=0, le=3600, description="after all traffic moved, before the old fleet goes")
    max_execution_seconds: int = Field(7200, ge=600, le=28800)
    capture: bool = True
    capture_sampling_percent: int = Field(100, ge=0, le=100)
    kms_key_id: str | None = Field(None, description="encrypts the captured data and, on instance types without "
                                                     "local NVMe storage, the instances' volumes (aws)")
    subnets: list[str] = Field(default_factory=list)
    security_group_ids: list[str] = Field(default_factory=list)
    autoscaling: AutoscalingConfig | None = None
    poll_seconds: float | None = Field(None, gt=0, description="how often to ask SageMaker while waiting "
                                                              "(default: 30 s on AWS, 1 s locally)")
    timeout_seconds: int = Field(3600, gt=0, description="how long to wait for an endpoint to reach InService")
    hourly_price_usd: float | None = Field(None, gt=0, description="the instance type's price per hour, for the cost "
                                                                   "per 1,000 output tokens (default: the price table "
                                                                   "of contracts/instances.py)")

    @property
    def hourly_price(self) -> float | None:
        """What an hour of one instance costs (None: the table does not know the type and no price is set)."""
        from contracts.instances import hourly_price

        return hourly_price(self.instance_type, self.hourly_price_usd)


class Version(BaseModel):
    """A packaged model version."""

    model_config = ConfigDict(frozen=True)
    model: str = Field(description="the registered model's name")
    version: str
    package_uri: str
    digest: str
    image: str
    build: str = Field("unoptimized", description="the serving build its package loads")

    @classmethod
    def of_registered(cls, model: str, version: str | int, tags: dict[str, str]) -> Version:
        """A registered version's package, from the tags it was registered with."""
        missing = [k for k in (T.PACKAGE_URI, T.PACKAGE_DIGEST, T.PACKAGE_IMAGE) if not tags.get(k)]
        if missing:
            raise DeploymentError(f"{model} version {version} has no servable package ({', '.join(missing)} unset): "
                                  "it was registered before packaging, or its gate failed")
        return cls(model=model, version=str(version), package_uri=tags[T.PACKAGE_URI], digest=tags[T.PACKAGE_DIGEST],
                   image=tags[T.PACKAGE_IMAGE], build=tags.get(T.BUILD_SERVED) or "unoptimized")

    @property
    def variant(self) -> str:
        """vN for a registered version; a named one (base, candidate) is its own variant."""
        return f"v{self.version}" if self.version.isdigit() else self.version

    @property
    def model_name(self) -> str:
        return resource_name(f"{self.model}-{self.variant}-{self.digest[:10]}")


class Plan(BaseModel):
    """Every request a deployment makes, before it makes them."""

    model_config = ConfigDict(frozen=True)
    endpoint: str
    strategy: Strategy
    models: list[dict[str, Any]]
    endpoint_config: dict[str, Any]
    deployment_config: dict[str, Any] | None = None
    scaling: list[tuple[dict[str, Any], dict[str, Any]]] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict, description="more tags of a new endpoint")

    @property
    def config_name(self) -> str:
        return str(self.endpoint_config["EndpointConfigName"])


class Outcome(BaseModel):
    model_config = ConfigDict(frozen=True)
    endpoint: str
    strategy: Strategy
    endpoint_config: str
    created: list[str] = Field(default_factory=list, description="what this run created (models, configs, endpoint)")
    changed: bool = True

    def summary(self) -> str:
        if not self.changed:
            return f"{self.endpoint} already serves {self.endpoint_config}; nothing to do"
        return f"{self.endpoint} serves {self.endpoint_config} ({self.strategy})"


class Planner:
    """Every request of a deployment, from the versions, the strategy and the deployment config: the models,
    the endpoint config (named from its content), the guardrails and the autoscaling."""

    def __init__(self, config: DeploymentConfig, *, role_arn: str, capture_uri: str | None) -> None:
        self.config, self.role_arn, self.capture_uri = config, role_arn, capture_uri

    def plan(self, endpoint: str, candidate: Version, strategy: Strategy, *, champion: Version | None = None,
             rollback_alarms: list[str] | None = None, tags: dict[str, str] | None = None) -> Plan:
        if strategy in ("ab", "shadow") and champion is None:
            raise DeploymentError(f"{strategy} needs a champion to compare with; deploy the first version all_at_once")
        if champion is not None and champion.model_name == candidate.model_name:
            raise DeploymentError(f"the candidate {candidate.model_name} is the champion already")
        cfg = self.config
        models = [self._model(candidate)]
        production, shadows = [self._variant(candidate, 1.0)], []
        if strategy == "ab" and champion is not None:
            models.insert(0, self._model(champion))
            production = [self._variant(champion, 1.0 - cfg.ab_candidate_weight),
                          self._variant(candidate, cfg.ab_candidate_weight)]
        elif strategy == "shadow" and champion is not None:
            models.insert(0, self._model(champion))
            production = [self._variant(champion, 1.0)]
            shadows = [self._variant(candidate, cfg.shadow_sampling_percent / 100.0)]
        body: dict[str, Any] = {"ProductionVariants": production}
        if shadows:
            body["ShadowProductionVariants"] = shadows
        if cfg.capture and self.capture_uri:
            capture: dict[str, Any] = {"EnableCapture": True, "InitialSamplingPercentage": cfg.capture_sampling_percent,
                                       "DestinationS3Uri": self.capture_uri,
                                       "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                                       "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}}
            if cfg.kms_key_id:
                capture["KmsKeyId"] = cfg.kms_key_id
            body["DataCaptureConfig"] = capture
        if cfg.kms_key_id and not has_local_storage(cfg.instance_type):
            body["KmsKeyId"] = cfg.kms_key_id  # a local NVMe volume is encrypted by its hardware and takes no key
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:10]
        config_request = {"EndpointConfigName": resource_name(f"{endpoint}-{strategy.replace('_', '')}-{digest}"),
                          **body, "Tags": [{"Key": T.ENDPOINT, "Value": endpoint}, {"Key": T.STRATEGY, "Value": strategy}]}
        deployment = self._deployment_config(strategy, rollback_alarms or [])
        scaling = [self._scaling(endpoint, v["VariantName"]) for v in production] if cfg.autoscaling else []
        return Plan(endpoint=endpoint, strategy=strategy, models=models, endpoint_config=config_request,
                    deployment_config=deployment, scaling=scaling, tags=tags or {})

    def _model(self, version: Version) -> dict[str, Any]:
        request: dict[str, Any] = {
            "ModelName": version.model_name,
            "PrimaryContainer": {
                "Image": version.image, **model_data(version.package_uri),
                "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
                                "SAGEMAKER_CONTAINER_LOG_LEVEL": "20", "HF_HUB_OFFLINE": "1"}},
            "ExecutionRoleArn": self.role_arn,
            "Tags": [{"Key": T.MODEL, "Value": version.model}, {"Key": T.VERSION, "Value": version.version},
                     {"Key": T.PACKAGE, "Value": version.digest[:64]}, {"Key": T.BUILD, "Value": version.build}],
        }
        if self.config.subnets:
            request["VpcConfig"] = {"Subnets": self.config.subnets, "SecurityGroupIds": self.config.security_group_ids}
        return request

    def _variant(self, version: Version, weight: float) -> dict[str, Any]:
        return {"VariantName": version.variant, "ModelName": version.model_name,
                "InstanceType": self.config.instance_type, "InitialInstanceCount": self.config.instance_count,
                "InitialVariantWeight": round(weight, 6)}

    def _deployment_config(self, strategy: Strategy, alarms: list[str]) -> dict[str, Any] | None:
        cfg = self.config
        if strategy not in ("canary", "linear"):
            return {"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in alarms]}} if alarms else None
        routing: dict[str, Any] = {"Type": strategy.upper(), "WaitIntervalInSeconds": cfg.wait_seconds}
        size = {"Type": "CAPACITY_PERCENT", "Value": cfg.canary_percent if strategy == "canary"
                else cfg.linear_step_percent}
        routing["CanarySize" if strategy == "canary" else "LinearStepSize"] = size
        config: dict[str, Any] = {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing,
                                                            "TerminationWaitInSeconds": cfg.bake_seconds,
                                                            "MaximumExecutionTimeoutInSeconds": cfg.max_execution_seconds}}
        if alarms:
            config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarms]}
        return config

    def _scaling(self, endpoint: str, variant: str) -> tuple[dict[str, Any], dict[str, Any]]:
        scaling = self.config.autoscaling
        assert scaling is not None
        resource = f"endpoint/{endpoint}/variant/{variant}"
        target = {"ServiceNamespace": "sagemaker", "ResourceId": resource,
                  "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
                  "MinCapacity": scaling.min_capacity, "MaxCapacity": scaling.max_capacity}
        policy = {"PolicyName": resource_name(f"{endpoint}-{variant}-invocations"), "ServiceNamespace": "sagemaker",
                  "ResourceId": resource, "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
                  "PolicyType": "TargetTrackingScaling",
                  "TargetTrackingScalingPolicyConfiguration": {
                      "TargetValue": scaling.invocations_per_instance,
                      "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
                      "ScaleInCooldown": scaling.scale_in_cooldown_s, "ScaleOutCooldown": scaling.scale_out_cooldown_s}}
        return target, policy



class Autoscaling:
    """Target tracking on a variant's invocations (application-autoscaling), and what an update must take off and
    put back: SageMaker refuses to update an endpoint whose variants are registered for autoscaling."""

    def __init__(self, client: Any, progress: Callable[[str], None]) -> None:
        self.client, self.progress = client, progress

    def scale(self, plan: Plan) -> None:
        for target, policy in plan.scaling:
            self.client.register_scalable_target(**target)
            self.client.put_scaling_policy(**policy)

    def deregister(self, endpoint: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """SageMaker refuses to update an endpoint whose variants are registered for autoscaling: take them off,
        and return what was registered (targets and their policies) so that a failed update can put it back."""
        resources = [f"endpoint/{endpoint['EndpointName']}/variant/{v['VariantName']}"
                     for v in endpoint.get("ProductionVariants", [])]
        if not resources:
            return []
        found = self.client.describe_scalable_targets(
            ServiceNamespace="sagemaker", ResourceIds=resources,
            ScalableDimension="sagemaker:variant:DesiredInstanceCount").get("ScalableTargets", [])
        saved = []
        for target in found:
            policies = self.client.describe_scaling_policies(
                ServiceNamespace="sagemaker", ResourceId=target["ResourceId"],
                ScalableDimension="sagemaker:variant:DesiredInstanceCount").get("ScalingPolicies", [])
            saved.append(({k: target[k] for k in ("ServiceNamespace", "ResourceId", "ScalableDimension", "MinCapacity",
                                                  "MaxCapacity")},
                          [{k: p[k] for k in ("PolicyName", "ServiceNamespace", "ResourceId", "ScalableDimension",
                                              "PolicyType", "TargetTrackingScalingPolicyConfiguration") if k in p}
                           for p in policies]))
            self.client.deregister_scalable_target(
                ServiceNamespace="sagemaker", ResourceId=target["ResourceId"],
                ScalableDimension="sagemaker:variant:DesiredInstanceCount")
        return saved

    def restore(self, saved: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
        """Put back the autoscaling of the variants that still serve after a failed or rolled-back update."""
        from botocore.exceptions import ClientError

        for target, policies in saved:
            try:
                self.client.register_scalable_target(**target)
                for policy in policies:
                    self.client.put_scaling_policy(**policy)
                self.progress(f"restored autoscaling of {target['ResourceId']}")
            except ClientError as exc:
                log.warning("could not restore autoscaling of %s: %s", target["ResourceId"], _reason(exc))



class SageMakerDeployer:
    """Plans and applies deployments with a boto3 `sagemaker` client (SageMaker's or the local control plane's)."""

    def __init__(self, client: Any, config: DeploymentConfig, *, role_arn: str | None = None,
                 capture_uri: str | None = None, autoscaling_client: Any = None,
                 progress: Callable[[str], None] | None = None) -> None:
        self.client, self.config = client, config
        self.progress = progress or (lambda text: log.info("%s", text))
        self.planner = Planner(config, role_arn=role_arn or LOCAL_ROLE, capture_uri=capture_uri)
        self.autoscaling = Autoscaling(autoscaling_client, self.progress) if autoscaling_client is not None else None

    def plan(self, endpoint: str, candidate: Version, strategy: Strategy, *, champion: Version | None = None,
             rollback_alarms: list[str] | None = None, tags: dict[str, str] | None = None) -> Plan:
        return self.planner.plan(endpoint, candidate, strategy, champion=champion, rollback_alarms=rollback_alarms,
                                 tags=tags)

    # --- applying --------------------------------------------------------------------------------

    def apply(self, plan: Plan) -> Outcome:
        from botocore.exceptions import ClientError, WaiterError

        existing = self._endpoint(plan.endpoint)
        if existing is not None and existing["EndpointStatus"] in IN_PROGRESS:
            # Another run's operation (or this deployment's, resumed after a crash): let it end, then decide.
            self.progress(f"{plan.endpoint} is {existing['EndpointStatus']}; waiting for it to end first")
            with contextlib.suppress(WaiterError):  # it may end Failed: that is decided below
                self._wait("endpoint_in_service", plan.endpoint, self._budget(plan))
            existing = self._endpoint(plan.endpoint)
        if existing is not None and existing["EndpointStatus"] == "InService" \
                and existing.get("EndpointConfigName") == plan.config_name:
            self.progress(f"{plan.endpoint} already serves {plan.config_name}")
            self._scale(plan)  # a run that stopped before its autoscaling gets it now (the calls are idempotent)
            return Outcome(endpoint=plan.endpoint, strategy=plan.strategy, endpoint_config=plan.config_name,
                           changed=False)
        if existing is not None and existing["EndpointStatus"] not in ("InService", "Failed"):
            raise DeploymentError(f"endpoint {plan.endpoint} is {existing['EndpointStatus']}; wait until it is "
                                  "InService, then deploy again")
        created: list[tuple[str, str]] = []
        scaling: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        try:
            for model in plan.models:
                if self._exists("model", model["ModelName"]):
                    continue
                self.client.create_model(**model)
                created.append(("model", model["ModelName"]))
                self.progress(f"created model {model['ModelName']}")
            if not self._exists("endpoint-config", plan.config_name):
                self.client.create_endpoint_config(**plan.endpoint_config)
                created.append(("endpoint-config", plan.config_name))
                self.progress(f"created endpoint config {plan.config_name}")
            if existing is not None and existing["EndpointStatus"] == "Failed":
                self.progress(f"{plan.endpoint} is Failed ({existing.get('FailureReason', '')}); replacing it")
                self.client.delete_endpoint(EndpointName=plan.endpoint)
                self._wait("endpoint_deleted", plan.endpoint)
                existing = None
            if existing is None:
                self.client.create_endpoint(EndpointName=plan.endpoint, EndpointConfigName=plan.config_name,
                                            Tags=[{"Key": T.ENDPOINT, "Value": plan.endpoint},
                                                  *({"Key": k, "Value": v} for k, v in plan.tags.items())])
                created.append(("endpoint", plan.endpoint))
                self.progress(f"creating endpoint {plan.endpoint} with {plan.config_name}")
            else:
                update: dict[str, Any] = {"EndpointName": plan.endpoint, "EndpointConfigName": plan.config_name}
                if plan.deployment_config:
                    update["DeploymentConfig"] = plan.deployment_config
                scaling = self._deregister_scaling(existing)
                self.client.update_endpoint(**update)
                self.progress(f"updating {plan.endpoint} from {existing.get('EndpointConfigName')} to "
                              f"{plan.config_name} ({plan.strategy})")
            self._wait("endpoint_in_service", plan.endpoint, self._budget(plan))
            described = self.client.describe_endpoint(EndpointName=plan.endpoint)
            if described.get("EndpointConfigName") != plan.config_name:
                raise DeploymentError(f"{plan.endpoint} still serves {described.get('EndpointConfigName')}: SageMaker "
                                      f"rolled the update back: {described.get('FailureReason', 'no reason given')}")
            self._scale(plan)
        except (ClientError, WaiterError, DeploymentError) as exc:
            reason = _reason(exc)
            self._undo(plan, created)
            self._restore_scaling(scaling)
            raise DeploymentError(f"deploying {plan.config_name} to {plan.endpoint} failed: {reason}") from None
        self.progress(f"{plan.endpoint} serves {plan.config_name}")
        return Outcome(endpoint=plan.endpoint, strategy=plan.strategy, endpoint_config=plan.config_name,
                       created=[name for _, name in created])

    def deploy(self, endpoint: str, candidate: Version, strategy: Strategy, *, champion: Version | None = None,
               rollback_alarms: list[str] | None = None, tags: dict[str, str] | None = None) -> Outcome:
        return self.apply(self.plan(endpoint, candidate, strategy, champion=champion, rollback_alarms=rollback_alarms,
                                    tags=tags))

    def remove(self, endpoint: str) -> list[str]:
        """Delete an endpoint, then its endpoint config and the models it served (what a temporary endpoint
        leaves); waits for an operation in progress to end first. Returns what it deleted."""
        from botocore.exceptions import ClientError, WaiterError

        described = self._endpoint(endpoint)
        if described is None:
            return []
        if described["EndpointStatus"] in IN_PROGRESS:
            with contextlib.suppress(WaiterError):
                self._wait("endpoint_in_service", endpoint)
            described = self._endpoint(endpoint) or described
        removed: list[str] = []
        names = [described.get("EndpointConfigName", "")]
        pending = (described.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
        names += [pending] if pending else []
        configs = []
        for name in filter(None, names):
            with contextlib.suppress(ClientError):
                configs.append(self.client.describe_endpoint_config(EndpointConfigName=name))
        self.client.delete_endpoint(EndpointName=endpoint)
        self._wait("endpoint_deleted", endpoint)
        removed.append(f"endpoint {endpoint}")
        for config in configs:
            models = {v["ModelName"] for v in [*config["ProductionVariants"], *config.get("ShadowProductionVariants", [])]}
            try:
                self.client.delete_endpoint_config(EndpointConfigName=config["EndpointConfigName"])
                removed.append(f"endpoint config {config['EndpointConfigName']}")
            except ClientError as exc:
                log.warning("could not remove endpoint config %s: %s", config["EndpointConfigName"], _reason(exc))
            for model in sorted(models):
                try:
                    self.client.delete_model(ModelName=model)
                    removed.append(f"model {model}")
                except ClientError as exc:
                    log.warning("could not remove model %s: %s", model, _reason(exc))
        for item in removed:
            self.progress(f"removed {item}")
        return removed

    def wait_in_service(self, endpoint: str) -> dict[str, Any]:
        """Until the endpoint is InService (DeploymentError with SageMaker's reason when it is not); its description."""
        from botocore.exceptions import WaiterError

        try:
            self._wait("endpoint_in_service", endpoint)
        except WaiterError as exc:
            raise DeploymentError(f"endpoint {endpoint}: {_reason(exc)}") from None
        return dict(self.client.describe_endpoint(EndpointName=endpoint))

    def _wait(self, waiter: str, endpoint: str, seconds: float | None = None) -> None:
        delay = max(1, round(self.config.poll_seconds or 30))
        budget = seconds or self.config.timeout_seconds
        self.client.get_waiter(waiter).wait(EndpointName=endpoint, WaiterConfig={
            "Delay": delay, "MaxAttempts": max(1, int(budget // delay))})

    def _budget(self, plan: Plan) -> float:
        """How long an update may take: starting the new fleet, then every traffic step and the baking."""
        policy = (plan.deployment_config or {}).get("BlueGreenUpdatePolicy")
        if not policy:
            return float(self.config.timeout_seconds)
        return float(self.config.timeout_seconds + policy.get("MaximumExecutionTimeoutInSeconds",
                                                              self.config.max_execution_seconds))

    def describe(self, name: str) -> dict[str, Any] | None:
        """DescribeEndpoint's answer, or None when there is no such endpoint."""
        return self._endpoint(name)

    def _endpoint(self, name: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            return dict(self.client.describe_endpoint(EndpointName=name))
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ValidationException":
                return None
            raise

    def _exists(self, kind: str, name: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            if kind == "model":
                self.client.describe_model(ModelName=name)
            else:
                self.client.describe_endpoint_config(EndpointConfigName=name)
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ValidationException":
                return False
            raise

    def _undo(self, plan: Plan, created: list[tuple[str, str]]) -> None:
        """Remove what this run created; what serves stays."""
        from botocore.exceptions import ClientError

        described = self._endpoint(plan.endpoint) or {}
        if described.get("EndpointStatus") in ("Updating", "RollingBack", "SystemUpdating"):
            pending = (described.get("PendingDeploymentSummary") or {}).get("EndpointConfigName", "")
            log.warning("%s is still %s (to %s): its models and configs stay; run the deployment again once it ends",
                        plan.endpoint, described["EndpointStatus"], pending)
            return
        for kind, name in reversed(created):
            try:
                if kind == "endpoint":
                    self.client.delete_endpoint(EndpointName=name)
                    self._wait("endpoint_deleted", name)
                elif kind == "endpoint-config":
                    if (self._endpoint(plan.endpoint) or {}).get("EndpointConfigName") != name:
                        self.client.delete_endpoint_config(EndpointConfigName=name)
                elif not self._in_use(plan.endpoint, name):
                    self.client.delete_model(ModelName=name)
                self.progress(f"removed {kind} {name}")
            except ClientError as exc:
                log.warning("could not remove %s %s: %s", kind, name, _reason(exc))

    def _in_use(self, endpoint: str, model: str) -> bool:
        described = self._endpoint(endpoint)
        if described is None or "EndpointConfigName" not in described:
            return False
        config = self.client.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
        return any(v.get("ModelName") == model for v in [*config["ProductionVariants"],
                                                         *config.get("ShadowProductionVariants", [])])

    def _scale(self, plan: Plan) -> None:
        if self.autoscaling is not None:
            self.autoscaling.scale(plan)

    def _deregister_scaling(self, endpoint: dict[str, Any]) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        return self.autoscaling.deregister(endpoint) if self.autoscaling is not None else []

    def _restore_scaling(self, saved: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
        if self.autoscaling is not None:
            self.autoscaling.restore(saved)


def _reason(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or getattr(exc, "last_response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        if error:
            return f"{error.get('Code', '')}: {error.get('Message', '')}"
        if "FailureReason" in response:
            return f"{response.get('EndpointStatus', '')}: {response['FailureReason']}"
    return str(exc)
