"""Endpoints as SageMaker's API shows them, and endpoints made by hand, with a boto3 `sagemaker` client only: the
same calls reach SageMaker and the local control plane.

`served` reads one endpoint (its variants, weights, status, the registered version each variant serves, where it
captures); `create` makes one from named variants (registered versions or, for the local control plane, folders),
as `genaiops endpoints create` does; `update_weights` and `delete` change it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts import container
from contracts import tags as T
from contracts.names import resource_name
from model_registry.sagemaker_mirror import model_data


class EndpointNotFoundError(LookupError):
    """There is no such endpoint."""


class ServedVariant(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    model: str = Field(description="the SageMaker model")
    weight: float
    shadow: bool = False
    sampling_percent: float = Field(100.0, description="shadow: the share of requests it is sent")
    instance_type: str = ""
    instances: int = 1
    status: str = Field("InService", description="SageMaker's VariantStatus, when it is not simply in service")
    message: str = ""
    tags: dict[str, str] = Field(default_factory=dict, description="the model's genaiops tags: the registered model "
                                                                   "and version it serves (base: the base model)")

    @property
    def registered(self) -> str:
        """models:/NAME/VERSION of a registered version; empty otherwise."""
        model, version = self.tags.get(T.MODEL), self.tags.get(T.VERSION, "")
        return f"models:/{model}/{version}" if model and version.isdigit() else ""

    @property
    def build(self) -> str:
        """The serving build its package loads (empty for a model not deployed by a release)."""
        return self.tags.get(T.BUILD, "")


class Served(BaseModel):
    """One endpoint as DescribeEndpoint and DescribeEndpointConfig tell it."""

    model_config = ConfigDict(frozen=True)
    name: str
    status: str
    config: str
    variants: list[ServedVariant]
    capture: str = Field("", description="DataCaptureConfig.DestinationS3Uri (empty: no capture)")
    capture_percent: float = 0.0
    failure_reason: str = ""
    created: str = ""
    updated: str = ""

    @property
    def primary(self) -> ServedVariant:
        """The production variant with the most traffic."""
        return max((v for v in self.variants if not v.shadow), key=lambda v: v.weight)


def served(client: Any, name: str, *, registered: bool = True) -> Served:
    """The endpoint `name` (`registered`: also which registered version each variant serves, from its model's
    tags)."""
    from botocore.exceptions import ClientError

    try:
        described = client.describe_endpoint(EndpointName=name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ValidationException":
            raise EndpointNotFoundError(f"endpoint {name}: {exc.response['Error'].get('Message', exc)}") from None
        raise
    config = client.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    weights = {v["VariantName"]: v for v in [*described.get("ProductionVariants", []),
                                             *described.get("ShadowProductionVariants", [])]}
    production = config.get("ProductionVariants", [])
    total = sum(float(v.get("InitialVariantWeight", 1.0)) for v in production) or 1.0
    variants = []
    for shadow, items in ((False, production), (True, config.get("ShadowProductionVariants", []))):
        for item in items:
            live = weights.get(item["VariantName"], {})
            status = (live.get("VariantStatus") or [{}])[0]
            weight = float(live.get("CurrentWeight", item.get("InitialVariantWeight", 1.0)))
            variants.append(ServedVariant(
                name=item["VariantName"], model=item["ModelName"], weight=weight, shadow=shadow,
                sampling_percent=min(100.0, 100.0 * weight / total) if shadow else 100.0,
                instance_type=item.get("InstanceType", ""), instances=int(item.get("InitialInstanceCount", 1)),
                status=status.get("Status", "InService"), message=status.get("StatusMessage", ""),
                tags=_model_tags(client, item["ModelName"]) if registered else {}))
    capture = described.get("DataCaptureConfig") or {}
    return Served(name=name, status=described["EndpointStatus"], config=described["EndpointConfigName"],
                  variants=variants, capture=capture.get("DestinationS3Uri", "") if capture.get("EnableCapture") else "",
                  capture_percent=float(capture.get("CurrentSamplingPercentage", 0)),
                  failure_reason=described.get("FailureReason", ""), created=_time(described.get("CreationTime")),
                  updated=_time(described.get("LastModifiedTime")))


def _model_tags(client: Any, model: str) -> dict[str, str]:
    from botocore.exceptions import ClientError

    try:
        arn = client.describe_model(ModelName=model)["ModelArn"]
        tags = {t["Key"]: t["Value"] for t in client.list_tags(ResourceArn=arn).get("Tags", [])}
    except ClientError:  # a model deleted under a serving endpoint: it serves on, unnamed
        return {}
    return {k: v for k, v in tags.items() if k.startswith("genaiops:")}


def _time(value: Any) -> str:
    return value.isoformat(timespec="seconds") if hasattr(value, "isoformat") else str(value or "")


def names(client: Any) -> list[str]:
    """Every endpoint's name, newest first (ListEndpoints, all pages)."""
    return [e["EndpointName"] for page in client.get_paginator("list_endpoints").paginate()
            for e in page["Endpoints"]]


class VariantSpec(BaseModel):
    """One variant of an endpoint made by hand: what it serves (a package URI), its share."""

    model_config = ConfigDict(frozen=True)
    name: str
    package_uri: str
    image: str = ""
    weight: float = 1.0
    shadow: bool = False
    sampling_percent: float = 100.0
    registered: dict[str, str] = Field(default_factory=dict, description="genaiops:model and genaiops:version tags")


def check(name: str, variants: list[VariantSpec]) -> None:
    """SageMaker's rules for an endpoint made by hand, checked before any request: ValueError names what is wrong."""
    import re

    from contracts.names import NAME_PATTERN

    for kind, value in [("endpoint name", name), *(("variant name", v.name) for v in variants)]:
        if not re.fullmatch(NAME_PATTERN, value):
            raise ValueError(f"{kind} {value!r}: up to 63 letters, digits and hyphens, starting with a letter or digit")
    names = [v.name for v in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"variant names must be unique; repeated: {', '.join(repeated)}")
    production, shadows = [v for v in variants if not v.shadow], [v for v in variants if v.shadow]
    if not production:
        raise ValueError("an endpoint needs at least one production variant (--variant)")
    if sum(v.weight for v in production) <= 0:
        raise ValueError("the production variants' weights must not all be 0")
    if shadows and (len(shadows) > 1 or len(production) > 1):
        raise ValueError("SageMaker takes one shadow variant, beside exactly one production variant")


def create(client: Any, name: str, variants: list[VariantSpec], *, role_arn: str, instance_type: str,
           capture_uri: str | None, capture_percent: float, timeout_s: float, max_batch_size: int | None,
           shadow_share: float) -> str:
    """CreateModel per variant, CreateEndpointConfig, then CreateEndpoint, which SageMaker refuses for an endpoint
    that exists; when a request is refused, what this call made goes again. Returns the endpoint config's name
    (the endpoint is `Creating`: wait with the `endpoint_in_service` waiter)."""
    from botocore.exceptions import ClientError

    production = [v for v in variants if not v.shadow]
    total = sum(v.weight for v in production) or 1.0
    made: list[tuple[str, str]] = []
    try:
        entries: list[tuple[VariantSpec, dict[str, Any]]] = []
        for variant in variants:
            environment = {container.TIMEOUT: f"{timeout_s:g}"}
            if max_batch_size is not None:  # else the served build's own batch size, or the server's default
                environment[container.MAX_BATCH_SIZE] = str(max_batch_size)
            if variant.shadow:
                environment[container.SHADOW_SHARE] = f"{shadow_share:g}"
            request: dict[str, Any] = {
                "PrimaryContainer": {**({"Image": variant.image} if variant.image else {}),
                                     **model_data(variant.package_uri), "Environment": environment},
                "ExecutionRoleArn": role_arn, "Tags": [{"Key": k, "Value": v} for k, v in variant.registered.items()]}
            model = resource_name(f"{name}-{variant.name}-{_digest(request)}")
            if _new(client.create_model, ModelName=model, **request):  # named by content: one that exists is this
                made.append(("model", model))
            # A shadow gets the share of requests its weight is of the production weights (SageMaker's rule).
            weight = variant.sampling_percent / 100.0 * total if variant.shadow else variant.weight
            entries.append((variant, {"VariantName": variant.name, "ModelName": model, "InstanceType": instance_type,
                                      "InitialInstanceCount": 1, "InitialVariantWeight": round(weight, 6)}))
        body: dict[str, Any] = {"ProductionVariants": [e for v, e in entries if not v.shadow]}
        shadows = [e for v, e in entries if v.shadow]
        if shadows:
            body["ShadowProductionVariants"] = shadows
        if capture_uri and capture_percent > 0:
            body["DataCaptureConfig"] = {"EnableCapture": True, "InitialSamplingPercentage": round(capture_percent),
                                         "DestinationS3Uri": capture_uri,
                                         "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
                                         "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]}}
        config = resource_name(f"{name}-manual-{_digest(body)}")
        if _new(client.create_endpoint_config, EndpointConfigName=config, **body,
                Tags=[{"Key": T.ENDPOINT, "Value": name}]):
            made.append(("endpoint-config", config))
        client.create_endpoint(EndpointName=name, EndpointConfigName=config, Tags=[{"Key": T.ENDPOINT, "Value": name}])
    except ClientError:
        _remove(client, made)
        raise
    return config


def update_weights(client: Any, name: str, weights: dict[str, float]) -> None:
    """UpdateEndpointWeightsAndCapacities (wait with the `endpoint_in_service` waiter)."""
    client.update_endpoint_weights_and_capacities(EndpointName=name, DesiredWeightsAndCapacities=[
        {"VariantName": variant, "DesiredWeight": weight} for variant, weight in weights.items()])


def _new(create: Any, **request: Any) -> bool:
    """Make a resource named by its content; False when it exists already (then it is this one)."""
    from botocore.exceptions import ClientError

    try:
        create(**request)
    except ClientError as exc:
        error = exc.response["Error"]
        if error["Code"] == "ValidationException" and "already exist" in error.get("Message", ""):
            return False
        raise
    return True


def _digest(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:10]


def _remove(client: Any, made: list[tuple[str, str]]) -> None:
    import contextlib

    from botocore.exceptions import ClientError

    for kind, name in reversed(made):
        with contextlib.suppress(ClientError):
            if kind == "model":
                client.delete_model(ModelName=name)
            else:
                client.delete_endpoint_config(EndpointConfigName=name)
