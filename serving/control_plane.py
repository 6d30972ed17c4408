"""The local SageMaker control plane: SageMaker's endpoint API over the local endpoints.

`CreateModel`, `CreateEndpointConfig`, `CreateEndpoint`, `UpdateEndpoint` (blue/green with
deployment guardrails), `UpdateEndpointWeightsAndCapacities`, their `Describe`, `List` and
`Delete` twins: each request is checked against botocore's service model and answered as
SageMaker answers it, so the one boto3 deployer runs unchanged here and on AWS. There is no
second endpoint implementation: an endpoint is a local endpoint (`serving.local`), each of its
variants serves its model's `ModelDataUrl` (a `model.tar.gz`, unpacked) through the package's
own `code/inference.py`, as the SageMaker container would.

An update runs SageMaker's blue/green deployment: the new endpoint config's fleet starts beside
the old one and takes no traffic until every variant answers `/ping`; traffic then moves all at
once, as a canary then the rest, or in linear steps, with `WaitIntervalInSeconds` between steps
and `TerminationWaitInSeconds` of baking at the end. The `AutoRollbackConfiguration` alarms are
evaluated by the local alarm evaluator throughout; one in `ALARM` (or passing
`MaximumExecutionTimeoutInSeconds`) sends all traffic back to the old fleet and removes the new
one. Requests in flight finish on the fleet that took them, so no caller request is dropped.

State lives in `<workspace>/sagemaker/`, so every shell sees the same models, configs and endpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tarfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serving.endpoint import CaptureConfig, EndpointConfig, VariantConfig, _atomic_write
from serving.local import EndpointError, LocalEndpoints
from serving.sagemaker_api import ApiError, arn, check, timestamp, validation

log = logging.getLogger("serving.control_plane")

ACTIVE = ("Creating", "Updating", "RollingBack", "Deleting", "SystemUpdating")
WATCH_INTERVAL_S = 1.0


class ControlPlane:
    """SageMaker's endpoint actions over the local endpoints of one workspace."""

    def __init__(self, workspace: Path, *, region: str = "us-east-1") -> None:
        self.workspace = workspace.resolve()
        self.region = region
        self.root = self.workspace / "sagemaker"
        self.endpoints = LocalEndpoints(self.workspace)
        self._lock = threading.RLock()
        self._workers: dict[str, threading.Thread] = {}
        self.actions: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "CreateModel": self.create_model, "DescribeModel": self.describe_model, "DeleteModel": self.delete_model,
            "CreateEndpointConfig": self.create_endpoint_config,
            "DescribeEndpointConfig": self.describe_endpoint_config,
            "DeleteEndpointConfig": self.delete_endpoint_config,
            "CreateEndpoint": self.create_endpoint, "DescribeEndpoint": self.describe_endpoint,
            "UpdateEndpoint": self.update_endpoint,
            "UpdateEndpointWeightsAndCapacities": self.update_weights,
            "ListEndpoints": self.list_endpoints, "DeleteEndpoint": self.delete_endpoint,
            "ListTags": self.list_tags,
        }

    def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Answer one request; raises ApiError as SageMaker would answer it."""
        handler = self.actions.get(action)
        if handler is None:
            raise ApiError("UnknownOperationException", f"The action {action} is not valid for this web service "
                                                         "(the local SageMaker control plane).")
        check(action, params)
        return handler(params)

    # --- records ---------------------------------------------------------------------------

    def _path(self, kind: str, name: str) -> Path:
        return self.root / kind / f"{name}.json"

    def _read(self, kind: str, name: str) -> dict[str, Any] | None:
        path = self._path(kind, name)
        return json.loads(path.read_text()) if path.exists() else None

    def _write(self, kind: str, record: dict[str, Any], name: str) -> None:
        _atomic_write(self._path(kind, name), json.dumps(record, indent=2))

    def _need(self, kind: str, name: str) -> dict[str, Any]:
        record = self._read(kind, name)
        if record is None:
            noun = {"models": "model", "endpoint-configs": "endpoint configuration", "endpoints": "endpoint"}[kind]
            raise validation(f'Could not find {noun} "{arn(self.region, _arn_kind(kind), name)}".')
        return record

    def _names(self, kind: str) -> list[str]:
        folder = self.root / kind
        return sorted(p.stem for p in folder.glob("*.json")) if folder.exists() else []

    # --- models ----------------------------------------------------------------------------

    def create_model(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["ModelName"]
        containers = [params["PrimaryContainer"]] if "PrimaryContainer" in params else params.get("Containers", [])
        if len(containers) != 1:
            raise validation("The local control plane serves models with exactly one container "
                             "(PrimaryContainer, or Containers with one item).")
        url = _model_data_url(containers[0])
        if url is None:
            raise validation("The container needs ModelDataUrl (or ModelDataSource.S3DataSource.S3Uri): the "
                             "local control plane serves a model package, not an image.")
        unpacked = self._model_data(url)  # SageMaker checks that it can read the model data at creation
        with self._lock:
            if self._read("models", name) is not None:
                raise validation(f'Cannot create already existing model "{arn(self.region, "model", name)}".')
            record = {**params, "ModelArn": arn(self.region, "model", name), "CreationTime": timestamp(),
                      "_unpacked": str(unpacked)}
            self._tag(record["ModelArn"], params.get("Tags") or [])
            record.pop("Tags", None)
            self._write("models", record, name)
        return {"ModelArn": record["ModelArn"]}

    def describe_model(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in self._need("models", params["ModelName"]).items() if not k.startswith("_")}

    def delete_model(self, params: dict[str, Any]) -> dict[str, Any]:
        """As SageMaker: the model goes, endpoints serving it keep serving. Its unpacked package goes too once
        no other model and no endpoint uses it."""
        with self._lock:
            record = self._need("models", params["ModelName"])
            self._path("models", params["ModelName"]).unlink()
            self._tag(record["ModelArn"], None)
            unpacked = record.get("_unpacked", "")
            cache = self.root / "model-data"
            if unpacked and Path(unpacked).parent == cache and not self._uses(unpacked):
                shutil.rmtree(unpacked, ignore_errors=True)
        return {}

    def _uses(self, folder: str) -> bool:
        """Whether a model or an endpoint's variant still uses an unpacked package."""
        if any((self._read("models", name) or {}).get("_unpacked") == folder for name in self._names("models")):
            return True
        store = self.endpoints.store
        return any(v.model == folder for name in store.names() for v in store.config(name).variants)

    def _model_data(self, url: str) -> Path:
        """The unpacked package of a model (cached by the archive's digest), as the container sees /opt/ml/model."""
        if url.startswith("s3://"):
            source = self._download(url)
        elif url.startswith("file://"):
            source = _local_path(url)
        else:
            raise validation(f"Could not access model data at {url}: the local control plane reads s3:// and file:// "
                             "URIs.")
        if source.is_dir():
            return source
        if not source.is_file():
            raise validation(f"Could not access model data at {url}. No such file.")
        digest = hashlib.sha256()
        with source.open("rb") as data:
            for chunk in iter(lambda: data.read(1 << 20), b""):
                digest.update(chunk)
        target = self.root / "model-data" / digest.hexdigest()[:32]
        if target.exists():
            return target
        partial = target.with_name(target.name + f".{os.getpid()}.{threading.get_ident()}.partial")
        try:
            with tarfile.open(source, "r:*") as archive:
                archive.extractall(partial, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            shutil.rmtree(partial, ignore_errors=True)
            raise validation(f"Could not access model data at {url}: not a readable model.tar.gz ({exc}).") from None
        try:
            partial.rename(target)
        except OSError:  # unpacked by another request meanwhile
            shutil.rmtree(partial, ignore_errors=True)
        return target

    def _download(self, url: str) -> Path:
        """An S3 model artifact (a `model.tar.gz`, or an uncompressed prefix as JumpStart keeps its models),
        fetched once per content with the default AWS credentials, as the execution role would fetch it."""
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = url.removeprefix("s3://").partition("/")
        s3 = boto3.client("s3", region_name=self.region)
        partial: Path | None = None
        try:
            if url.endswith("/"):
                objects = [o for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
                           for o in page.get("Contents", []) if not o["Key"].endswith("/")]
                if not objects:
                    raise validation(f"Could not access model data at {url}: the prefix holds no objects.")
                version = "|".join(f"{o['Key']}={o['ETag']}" for o in objects)
            else:
                objects, version = [], s3.head_object(Bucket=bucket, Key=key)["ETag"]
            folder = self.root / "downloads" / hashlib.sha256(f"{url}|{version}".encode()).hexdigest()[:32]
            target = folder if objects else folder / Path(key).name
            if target.exists():
                return target
            partial = folder.with_name(f".{folder.name}.{os.getpid()}.{threading.get_ident()}.partial")
            for item in objects or [{"Key": key}]:
                destination = partial / (item["Key"][len(key):] if objects else Path(key).name)
                destination.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(destination))
        except (ClientError, BotoCoreError) as exc:
            if partial is not None:
                shutil.rmtree(partial, ignore_errors=True)
            raise validation(f"Could not access model data at {url}: {exc}") from None
        try:
            partial.rename(folder)
        except OSError:  # fetched by another request meanwhile
            shutil.rmtree(partial, ignore_errors=True)
        return target

    # --- endpoint configs ------------------------------------------------------------------

    def create_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointConfigName"]
        with self._lock:
            if self._read("endpoint-configs", name) is not None:
                raise validation("Cannot create already existing endpoint configuration "
                                 f'"{arn(self.region, "endpoint-config", name)}".')
            production, shadows = params["ProductionVariants"], params.get("ShadowProductionVariants", [])
            if shadows and (len(production) != 1 or len(shadows) != 1):
                raise validation("An endpoint configuration with ShadowProductionVariants must have exactly one "
                                 "production variant and one shadow variant.")
            names = [v["VariantName"] for v in production + shadows]
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise validation(f"Variant names must be unique within an endpoint configuration; repeated: "
                                 f"{', '.join(repeated)}.")
            for variant in production + shadows:
                if "ServerlessConfig" in variant:
                    raise validation(f"Variant {variant['VariantName']}: serverless variants are not served by the "
                                     "local control plane; give InstanceType and InitialInstanceCount.")
                missing = [k for k in ("ModelName", "InstanceType", "InitialInstanceCount") if k not in variant]
                if missing:
                    raise validation(f"Variant {variant['VariantName']} is missing {', '.join(missing)}.")
                self._need("models", variant["ModelName"])
            if sum(float(v.get("InitialVariantWeight", 1.0)) for v in production) <= 0:
                raise validation("The sum of the InitialVariantWeight of the production variants must be greater "
                                 "than 0.")
            capture = params.get("DataCaptureConfig")
            if capture and not capture["DestinationS3Uri"].startswith(("file://", "s3://")):
                raise validation(f"DataCaptureConfig.DestinationS3Uri {capture['DestinationS3Uri']!r} is not an S3 "
                                 "(or, locally, a file://) URI.")
            record = {**params, "EndpointConfigArn": arn(self.region, "endpoint-config", name),
                      "CreationTime": timestamp()}
            self._tag(record["EndpointConfigArn"], params.get("Tags") or [])
            record.pop("Tags", None)
            self._write("endpoint-configs", record, name)
        return {"EndpointConfigArn": record["EndpointConfigArn"]}

    def describe_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._need("endpoint-configs", params["EndpointConfigName"])

    def delete_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            record = self._need("endpoint-configs", params["EndpointConfigName"])
            self._path("endpoint-configs", params["EndpointConfigName"]).unlink()
            self._tag(record["EndpointConfigArn"], None)
        return {}

    def _fleet(self, config: dict[str, Any]) -> list[VariantConfig]:
        """The local variants of an endpoint config: one fleet, named after the config."""
        fleet = config["EndpointConfigName"]
        production = config["ProductionVariants"]
        total = sum(float(v.get("InitialVariantWeight", 1.0)) for v in production)
        variants = []
        for variant in production:
            model = self._need("models", variant["ModelName"])
            variants.append(VariantConfig(name=variant["VariantName"], fleet=fleet, weight=float(
                variant.get("InitialVariantWeight", 1.0)), model=str(self._model_data(_model_data_url(_container(model)) or ""))))
        for shadow in config.get("ShadowProductionVariants", []):
            model = self._need("models", shadow["ModelName"])
            # SageMaker mirrors to a shadow the share of requests its weight is of the production weights.
            share = min(100.0, 100.0 * float(shadow.get("InitialVariantWeight", 1.0)) / total)
            variants.append(VariantConfig(name=shadow["VariantName"], fleet=fleet, shadow=True, sampling_percentage=share,
                                          model=str(self._model_data(_model_data_url(_container(model)) or ""))))
        return variants

    def _capture(self, config: dict[str, Any]) -> CaptureConfig:
        capture = config.get("DataCaptureConfig")
        if not capture or not capture.get("EnableCapture", True):
            return CaptureConfig(enabled=False)
        destination = capture["DestinationS3Uri"]
        return CaptureConfig(enabled=True, sampling_percentage=float(capture["InitialSamplingPercentage"]),
                             destination=str(_local_path(destination)) if destination.startswith("file://")
                             else None)

    # --- endpoints -------------------------------------------------------------------------

    def create_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name, config_name = params["EndpointName"], params["EndpointConfigName"]
        if self._read("endpoints", name) is not None:  # checked again under the lock; this spares the unpacking
            raise validation(f'Cannot create already existing endpoint "{arn(self.region, "endpoint", name)}".')
        config = self._need("endpoint-configs", config_name)
        local = EndpointConfig(name=name, variants=self._fleet(config), capture=self._capture(config))
        with self._lock:
            if self._read("endpoints", name) is not None:
                raise validation(f'Cannot create already existing endpoint "{arn(self.region, "endpoint", name)}".')
            now = timestamp()
            record = {"EndpointName": name, "EndpointArn": arn(self.region, "endpoint", name),
                      "EndpointConfigName": config_name, "EndpointStatus": "Creating", "CreationTime": now,
                      "LastModifiedTime": now}
            self._write("endpoints", record, name)
            self._tag(record["EndpointArn"], params.get("Tags") or [])
            self._start(name, lambda: self._create(name, local))
        return {"EndpointArn": record["EndpointArn"]}

    def _create(self, name: str, local: EndpointConfig) -> None:
        try:
            self.endpoints.create(local)
        except EndpointError as exc:
            self._update_record(name, EndpointStatus="Failed", FailureReason=str(exc)[:1024])
            return
        self._update_record(name, EndpointStatus="InService")

    def describe_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        record = self._need("endpoints", name)
        status = record["EndpointStatus"]
        try:
            live = self.endpoints.describe(name)
        except EndpointError:
            live = None
        if status == "InService" and (live is None or live.status == "Failed"):
            status = "Failed"
            record["FailureReason"] = live.failure_reason if live else "the endpoint's host is gone"
        answer = {k: v for k, v in record.items() if not k.startswith("_")}
        answer["EndpointStatus"] = status
        config = self._read("endpoint-configs", record["EndpointConfigName"])
        current = {v.name: v for v in (live.variants if live else []) if v.fleet == record["EndpointConfigName"]}
        if config is not None:
            answer["ProductionVariants"] = [self._summary(v, current, record) for v in config["ProductionVariants"]]
            if config.get("ShadowProductionVariants"):
                answer["ShadowProductionVariants"] = [self._summary(v, current, record)
                                                      for v in config["ShadowProductionVariants"]]
            capture = config.get("DataCaptureConfig")
            if capture:
                answer["DataCaptureConfig"] = {
                    "EnableCapture": capture.get("EnableCapture", True),
                    "CaptureStatus": "Started" if capture.get("EnableCapture", True) else "Stopped",
                    "CurrentSamplingPercentage": capture["InitialSamplingPercentage"],
                    "DestinationS3Uri": capture["DestinationS3Uri"], "KmsKeyId": capture.get("KmsKeyId", "")}
        return answer

    def _summary(self, variant: dict[str, Any], live: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
        model = self._read("models", variant["ModelName"]) or {}
        image = _container(model).get("Image", "")
        weights = record.get("_weights", {})
        weight = float(weights.get(variant["VariantName"], variant.get("InitialVariantWeight", 1.0)))
        count = int(variant.get("InitialInstanceCount", 1))
        summary: dict[str, Any] = {"VariantName": variant["VariantName"], "CurrentWeight": weight,
                                   "DesiredWeight": weight, "CurrentInstanceCount": count, "DesiredInstanceCount": count}
        if image:
            summary["DeployedImages"] = [{"SpecifiedImage": image, "ResolvedImage": image,
                                          "ResolutionTime": record["CreationTime"]}]
        state = live.get(variant["VariantName"])
        if state is not None and state.status != "InService":
            summary["VariantStatus"] = [{"Status": "Creating" if state.status in ("Creating", "Restarting") else
                                         "Deleting" if state.status == "Draining" else "Updating",
                                         "StatusMessage": state.last_error[:1024]}]
        return summary

    def list_endpoints(self, params: dict[str, Any]) -> dict[str, Any]:
        token = params.get("NextToken") or "0"
        if not token.isdigit():
            raise validation(f"Invalid pagination token {token!r}.")
        bounds = {key: float(params[key]) for key in ("CreationTimeBefore", "CreationTimeAfter",
                                                      "LastModifiedTimeBefore", "LastModifiedTimeAfter") if key in params}
        summaries = []
        for name in self._names("endpoints"):
            if params.get("NameContains", "").lower() not in name.lower():
                continue
            try:
                described = self.describe_endpoint({"EndpointName": name})
            except ApiError:  # deleted meanwhile
                continue
            if params.get("StatusEquals") and described["EndpointStatus"] != params["StatusEquals"]:
                continue
            if any((key.endswith("Before") and described[key.replace("Before", "")] >= bound)
                   or (key.endswith("After") and described[key.replace("After", "")] <= bound)
                   for key, bound in bounds.items()):
                continue
            summaries.append({k: described[k] for k in ("EndpointName", "EndpointArn", "CreationTime",
                                                         "LastModifiedTime", "EndpointStatus")})
        key = {"Name": "EndpointName", "Status": "EndpointStatus"}.get(params.get("SortBy", "CreationTime"),
                                                                        "CreationTime")
        summaries.sort(key=lambda s: s[key], reverse=params.get("SortOrder", "Descending") == "Descending")
        start = int(token)
        size = int(params.get("MaxResults", 10))
        answer: dict[str, Any] = {"Endpoints": summaries[start:start + size]}
        if start + size < len(summaries):
            answer["NextToken"] = str(start + size)
        return answer

    def _tag(self, resource: str, tags: list[dict[str, str]] | None) -> None:
        """Keep (or, with None, forget) a resource's tags, by its ARN."""
        path = self._path("tags", re.sub(r"[^a-zA-Z0-9.-]", "_", resource))
        if tags is None:
            path.unlink(missing_ok=True)
        elif tags:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, json.dumps({"ResourceArn": resource, "Tags": tags}))

    def list_tags(self, params: dict[str, Any]) -> dict[str, Any]:
        resource = params["ResourceArn"]
        kind, _, name = resource.rsplit(":", 1)[-1].partition("/")
        kinds = {"model": "models", "endpoint-config": "endpoint-configs", "endpoint": "endpoints"}
        if kind not in kinds or not any(n.lower() == name for n in self._names(kinds[kind])):
            raise validation(f"Could not find resource {resource!r}.")
        path = self._path("tags", re.sub(r"[^a-zA-Z0-9.-]", "_", resource))
        tags = json.loads(path.read_text())["Tags"] if path.exists() else []
        start = int(params.get("NextToken") or 0)
        size = int(params.get("MaxResults", 50))
        answer: dict[str, Any] = {"Tags": tags[start:start + size]}
        if start + size < len(tags):
            answer["NextToken"] = str(start + size)
        return answer

    def delete_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        with self._lock:
            record = self._need("endpoints", name)
            if record["EndpointStatus"] in ACTIVE:
                raise validation(f'Cannot delete in-progress endpoint "{record["EndpointArn"]}" '
                                 f"({record['EndpointStatus']}).")
            self._update_record(name, EndpointStatus="Deleting")
        try:
            with contextlib.suppress(EndpointError):  # a Failed endpoint may have no local endpoint left
                self.endpoints.delete(name)
        except Exception as exc:
            self._update_record(name, EndpointStatus="Failed", FailureReason=f"DeleteEndpoint failed: {exc}"[:1024])
            raise
        with self._lock:
            self._path("endpoints", name).unlink(missing_ok=True)
            self._tag(record["EndpointArn"], None)
        return {}

    def update_weights(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        with self._lock:
            record = self._need("endpoints", name)
            if record["EndpointStatus"] != "InService":
                raise validation(f'Cannot update in-progress endpoint "{record["EndpointArn"]}".')
            config = self._need("endpoint-configs", record["EndpointConfigName"])
            known = {v["VariantName"] for v in config["ProductionVariants"]}
            desired = params["DesiredWeightsAndCapacities"]
            for item in desired:
                if item["VariantName"] not in known:
                    raise validation(f"The variant name(s) [{item['VariantName']}] is/are not present in the endpoint "
                                     f"{name} (its variants: {', '.join(sorted(known))}).")
                if int(item.get("DesiredInstanceCount", 1)) < 1:
                    raise validation("DesiredInstanceCount must be at least 1 for an instance-based variant.")
            weights = {**{v["VariantName"]: float(v.get("InitialVariantWeight", 1.0))
                          for v in config["ProductionVariants"]}, **record.get("_weights", {})}
            weights.update({i["VariantName"]: float(i["DesiredWeight"]) for i in desired if "DesiredWeight" in i})
            if sum(weights.values()) <= 0:
                raise validation("The sum of the weights of the production variants must be greater than 0.")
            self._update_record(name, EndpointStatus="Updating")
        try:
            self.endpoints.update_weights(name, weights)
        except EndpointError as exc:
            self._update_record(name, EndpointStatus="InService")
            raise validation(str(exc)) from None
        except BaseException:
            self._update_record(name, EndpointStatus="InService")
            raise
        self._update_record(name, EndpointStatus="InService", _weights=weights)
        return {"EndpointArn": record["EndpointArn"]}

    def update_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name, config_name = params["EndpointName"], params["EndpointConfigName"]
        config = self._need("endpoint-configs", config_name)
        deployment = params.get("DeploymentConfig") or {}
        plan = Shift.of(deployment, sum(int(v["InitialInstanceCount"]) for v in config["ProductionVariants"]))
        missing = [a for a in plan.alarms if self._alarm(a) is None]
        if missing:
            raise validation(f"AutoRollbackConfiguration names alarm(s) that do not exist: {', '.join(missing)}.")
        self._need("endpoints", name)
        green = self._fleet(config)  # unpacked before the lock: a large package takes a while
        with self._lock:
            record = self._need("endpoints", name)
            if record["EndpointStatus"] != "InService":
                raise validation(f'Cannot update in-progress endpoint "{record["EndpointArn"]}".')
            if config_name == record["EndpointConfigName"]:
                raise validation(f"The endpoint {name} already serves endpoint configuration {config_name}; "
                                 "create a new endpoint configuration to update it.")
            now = timestamp()
            self._update_record(name, EndpointStatus="Updating", LastModifiedTime=now, FailureReason=None,
                                _deployment=deployment,
                                PendingDeploymentSummary={
                                    "EndpointConfigName": config_name, "StartTime": now,
                                    "ProductionVariants": [{"VariantName": v["VariantName"],
                                                            "DesiredWeight": float(v.get("InitialVariantWeight", 1.0)),
                                                            "InstanceType": v["InstanceType"],
                                                            "DesiredInstanceCount": int(v["InitialInstanceCount"]),
                                                            "VariantStatus": [{"Status": "Creating"}]}
                                                           for v in config["ProductionVariants"]]})
            self._start(name, lambda: self._blue_green(name, record["EndpointConfigName"], config, green, plan,
                                                       deployment))
        return {"EndpointArn": record["EndpointArn"]}

    # --- blue/green --------------------------------------------------------------------------

    def _blue_green(self, name: str, blue: str, config: dict[str, Any], green: list[VariantConfig], plan: Shift,
                    deployment: dict[str, Any]) -> None:
        started = time.monotonic()
        current = self.endpoints.store.config(name)
        fleet = config["EndpointConfigName"]
        both = current.model_copy(update={"variants": [*current.variants, *green], "fleet_shares": {blue: 1.0,
                                                                                                    fleet: 0.0}})
        try:
            self.endpoints.update(EndpointConfig.model_validate(both.model_dump()))
        except EndpointError as exc:  # the new fleet never took traffic
            self._finish(name, blue, failure=f"The new fleet of {fleet} failed to start: {exc}")
            return
        try:
            reason = None
            for share in plan.steps:  # each step bakes for WaitIntervalInSeconds, watched by the rollback alarms
                self._pending_status(name, "ActivatingTraffic")
                self._shares(name, current, green, {blue: 1.0 - share, fleet: share})
                self._pending_status(name, "Baking")
                reason = self._watch(plan, plan.wait, started)
                if reason:
                    break
            if reason is None:  # then TerminationWaitInSeconds before the old fleet goes, still watched
                reason = self._watch(plan, plan.bake, started)
        except Exception as exc:  # a failure half-way is rolled back as an alarm would be
            log.exception("endpoint %s: the update to %s failed", name, fleet)
            reason = f"the update failed: {type(exc).__name__}: {exc}"
        if reason:
            self._update_record(name, EndpointStatus="RollingBack")
            try:
                self._shares(name, current, [], {})  # all traffic back to the old fleet; the new one drains, stops
            except Exception as exc:
                self._update_record(name, EndpointStatus="UpdateRollbackFailed", PendingDeploymentSummary=None,
                                    FailureReason=f"The update to {fleet} failed ({reason}) and so did its rollback: "
                                                  f"{exc}"[:1024])
                return
            self._finish(name, blue, failure=f"The update to {fleet} was rolled back: {reason}")
            return
        self._shares(name, current.model_copy(update={"variants": []}), green, {})  # the old fleet drains and stops
        self._finish(name, fleet, deployment=deployment, capture=self._capture(config))

    def _shares(self, name: str, blue: EndpointConfig, green: list[VariantConfig], shares: dict[str, float]) -> None:
        live = self.endpoints.store.config(name)
        variants = [*blue.variants, *green]
        desired = live.model_copy(update={"variants": variants, "fleet_shares": shares if len(
            {v.fleet for v in variants}) > 1 else {}})
        self.endpoints.update(EndpointConfig.model_validate(desired.model_dump()))

    def _watch(self, plan: Shift, seconds: float, started: float) -> str | None:
        """Wait `seconds`, evaluating the rollback alarms; the reason to roll back, or None."""
        from monitoring.alarms import AlarmStore
        from monitoring.metrics import SqliteMetricSink
        from monitoring.monitor import evaluate_alarms

        store, source = AlarmStore(self.workspace / "alarms"), SqliteMetricSink(self.workspace / "metrics.db")
        deadline = time.monotonic() + seconds
        while True:
            evaluate_alarms(store, source, plan.alarms, datetime.now(UTC))
            for alarm in plan.alarms:
                record = store.get(alarm)
                if record is not None and record.state == "ALARM":
                    return f"alarm {alarm} is in ALARM ({record.reason})"
            if plan.timeout and time.monotonic() - started > plan.timeout:
                return f"the deployment took longer than MaximumExecutionTimeoutInSeconds ({plan.timeout:.0f} s)"
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(WATCH_INTERVAL_S, left))

    def _finish(self, name: str, config_name: str, *, failure: str | None = None,
                deployment: dict[str, Any] | None = None, capture: CaptureConfig | None = None) -> None:
        if capture is not None:
            live = self.endpoints.store.config(name)
            if live.capture != capture:
                self.endpoints.update(live.model_copy(update={"capture": capture}))
        changes: dict[str, Any] = {"EndpointStatus": "InService", "EndpointConfigName": config_name,
                                   "LastModifiedTime": timestamp(), "PendingDeploymentSummary": None,
                                   "_deployment": None, "FailureReason": failure[:1024] if failure else None}
        if failure is None:
            changes["_weights"] = None
            if deployment:
                changes["LastDeploymentConfig"] = deployment
        else:
            log.warning("endpoint %s: %s", name, failure)
        self._update_record(name, **changes)

    def _pending_status(self, name: str, status: str) -> None:
        with self._lock:
            record = self._read("endpoints", name)
            pending = (record or {}).get("PendingDeploymentSummary")
            if record is None or not pending:
                return
            for variant in pending.get("ProductionVariants", []):
                variant["VariantStatus"] = [{"Status": status, "StartTime": timestamp()}]
            self._write("endpoints", record, name)

    def _alarm(self, name: str) -> Any:
        from monitoring.alarms import AlarmStore

        return AlarmStore(self.workspace / "alarms").get(name)

    # --- workers ---------------------------------------------------------------------------

    def _update_record(self, name: str, **changes: Any) -> None:
        with self._lock:
            record = self._read("endpoints", name)
            if record is None:
                return
            for key, value in changes.items():
                if value is None:
                    record.pop(key, None)
                else:
                    record[key] = value
            if "LastModifiedTime" not in changes:
                record["LastModifiedTime"] = timestamp()
            self._write("endpoints", record, name)

    def _start(self, name: str, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            except Exception as exc:  # a bug must still leave the endpoint in a state SageMaker knows
                log.exception("endpoint %s: the operation failed", name)
                self._update_record(name, EndpointStatus="Failed", FailureReason=f"{type(exc).__name__}: {exc}"[:1024])
            finally:
                self._workers.pop(name, None)

        thread = threading.Thread(target=run, name=f"endpoint-{name}", daemon=True)
        self._workers[name] = thread
        thread.start()

    def wait_idle(self, timeout: float | None = None) -> None:
        """Until no operation runs (used when the server stops)."""
        for thread in list(self._workers.values()):
            thread.join(timeout)

    def recover(self) -> list[str]:
        """After a restart: finish what a stopped control plane left half-done, as SageMaker's own recovery would.

        An update in progress is rolled back to the endpoint's config; a creation ends InService or
        Failed as the local endpoint stands."""
        recovered = []
        for name in self._names("endpoints"):
            record = self._read("endpoints", name) or {}
            status = record.get("EndpointStatus")
            if status not in ACTIVE or name in self._workers:
                continue
            try:
                live = self.endpoints.describe(name)
            except EndpointError:
                live = None
            if status in ("Updating", "RollingBack") and live is not None and live.status in ("InService", "Updating"):
                current = self.endpoints.store.config(name)
                pending = (record.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
                if pending and {v.fleet for v in current.variants} == {pending} and status == "Updating":
                    # the old fleet was already gone: the update had finished but for its record
                    self._finish(name, pending, deployment=record.get("_deployment") or None)
                else:
                    keep = [v for v in current.variants if v.fleet == record["EndpointConfigName"]]
                    if keep and len(keep) != len(current.variants):
                        self.endpoints.update(current.model_copy(update={"variants": keep, "fleet_shares": {}}))
                    self._finish(name, record["EndpointConfigName"],
                                 failure="The control plane stopped during the update; it was rolled back.")
            elif live is not None and live.status == "InService":
                self._update_record(name, EndpointStatus="InService", PendingDeploymentSummary=None)
            else:
                self._update_record(name, EndpointStatus="Failed", PendingDeploymentSummary=None,
                                    FailureReason=f"The control plane stopped while the endpoint was {status}.")
            recovered.append(name)
        return recovered


class Shift:
    """A blue/green traffic shift: the green fleet's share at each step, the waits, the rollback alarms."""

    def __init__(self, steps: list[float], wait: float, bake: float, timeout: float | None, alarms: list[str]) -> None:
        self.steps, self.wait, self.bake, self.timeout, self.alarms = steps, wait, bake, timeout, alarms

    @classmethod
    def of(cls, deployment: dict[str, Any], instances: int) -> Shift:
        """The plan of a `DeploymentConfig`; none is SageMaker's default (all at once, no baking)."""
        if "RollingUpdatePolicy" in deployment:
            raise validation("RollingUpdatePolicy is not served by the local control plane; use BlueGreenUpdatePolicy.")
        alarms = [a["AlarmName"] for a in (deployment.get("AutoRollbackConfiguration") or {}).get("Alarms", [])]
        policy = deployment.get("BlueGreenUpdatePolicy")
        if policy is None:
            return cls([1.0], 0.0, 0.0, None, alarms)
        routing = policy["TrafficRoutingConfiguration"]
        kind, wait = routing["Type"], float(routing["WaitIntervalInSeconds"])
        bake = float(policy.get("TerminationWaitInSeconds", 0))
        timeout = float(policy["MaximumExecutionTimeoutInSeconds"]) if "MaximumExecutionTimeoutInSeconds" in policy \
            else None
        if kind == "ALL_AT_ONCE":
            return cls([1.0], wait, bake, timeout, alarms)
        size_key = "CanarySize" if kind == "CANARY" else "LinearStepSize"
        size = routing.get(size_key)
        if size is None:
            raise validation(f"TrafficRoutingConfiguration of type {kind} requires {size_key}.")
        # An instance count is a share of the new fleet's instances (locally, traffic moves by that share).
        if size["Type"] == "CAPACITY_PERCENT":
            fraction = float(size["Value"]) / 100.0
        else:
            fraction = min(1.0, float(size["Value"]) / max(1, instances))
        if kind == "CANARY":
            if not 0 < fraction <= 0.5:
                raise validation(f"CanarySize must be more than 0 and at most 50% of the new fleet's capacity; got "
                                 f"{size['Value']} {size['Type']}.")
            return cls([fraction, 1.0], wait, bake, timeout, alarms)
        if not 0.1 <= fraction <= 0.5:
            raise validation(f"LinearStepSize must be between 10% and 50% of the new fleet's capacity; got "
                             f"{size['Value']} {size['Type']}.")
        steps, share = [], 0.0
        while share < 1.0 - 1e-9:
            share = min(1.0, share + fraction)
            steps.append(round(share, 6))
        return cls(steps, wait, bake, timeout, alarms)


def _local_path(url: str) -> Path:
    """The path of a file:// URI (percent-decoded, as `Path.as_uri` encodes it)."""
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    return Path(url2pathname(urlparse(url).path))


def _container(model: dict[str, Any]) -> dict[str, Any]:
    return dict(model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0])


def _model_data_url(container: dict[str, Any]) -> str | None:
    if "ModelDataUrl" in container:
        return str(container["ModelDataUrl"])
    source = (container.get("ModelDataSource") or {}).get("S3DataSource") or {}
    return str(source["S3Uri"]) if "S3Uri" in source else None


def _arn_kind(kind: str) -> str:
    return {"models": "model", "endpoint-configs": "endpoint-config", "endpoints": "endpoint"}[kind]


# --- the server ----------------------------------------------------------------------------------

def server_file(workspace: Path) -> Path:
    return workspace.resolve() / "sagemaker" / "server.json"


def running_url(workspace: Path) -> str | None:
    """The URL of the workspace's control plane if one answers, else None."""
    import urllib.request

    path = server_file(workspace)
    if not path.exists():
        return None
    try:
        url = str(json.loads(path.read_text())["url"])
        with urllib.request.urlopen(f"{url}/_genaiops/health", timeout=5) as response:
            return url if response.status == 200 else None
    except (OSError, ValueError, KeyError):
        return None


def serve(workspace: Path, *, host: str = "127.0.0.1", port: int = 0, region: str = "us-east-1",
          ready: Callable[[str], None] | None = None) -> int:
    """Run the workspace's control plane until SIGTERM or SIGINT (one per workspace: a lock says so)."""
    import fcntl
    import signal

    from serving.sagemaker_api import serve_api

    plane = ControlPlane(workspace, region=region)
    plane.root.mkdir(parents=True, exist_ok=True)
    lock = (plane.root / "server.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise RuntimeError(f"a control plane already runs for {plane.workspace} at {running_url(workspace)}") from None
    recovered = plane.recover()
    if recovered:
        log.warning("recovered endpoints left mid-operation: %s", ", ".join(recovered))
    server = serve_api(plane.call, host, port)
    bound_host, bound_port = server.server_address[:2]
    url = f"http://{bound_host}:{bound_port}"

    def stop(*_: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    _atomic_write(server_file(workspace), json.dumps({"url": url, "pid": os.getpid()}))
    if ready is not None:
        ready(url)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            if json.loads(server_file(workspace).read_text())["pid"] == os.getpid():
                server_file(workspace).unlink()
        lock.close()
    return 0


def ensure(workspace: Path, *, timeout: float = 120.0) -> str:
    """The URL of the workspace's control plane, started in the background if none runs.

    It outlives the command that started it, as the endpoints do; `genaiops sagemaker-api stop`
    (or SIGTERM to the pid in `sagemaker/server.json`) stops it."""
    import subprocess
    import sys

    url = running_url(workspace)
    if url is not None:
        return url
    root = workspace.resolve() / "sagemaker"
    root.mkdir(parents=True, exist_ok=True)
    with (root / "server.log").open("ab") as logfile:
        process = subprocess.Popen([sys.executable, "-m", "serving.control_plane", "--workspace", str(workspace)],
                                   stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env=os.environ.copy())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        url = running_url(workspace)
        if url is not None:
            return url
        if process.poll() is not None:
            url = running_url(workspace)  # another shell's control plane won the lock
            if url is not None:
                return url
            tail = (root / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the local SageMaker control plane exited with code {process.returncode}:\n{tail}")
        time.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"the local SageMaker control plane did not start within {timeout:.0f} s; see {root / 'server.log'}")


def stop_running(workspace: Path, timeout: float = 60.0) -> bool:
    """Stop the workspace's control plane if one runs; True if one did."""
    import signal

    path = server_file(workspace)
    try:
        pid = int(json.loads(path.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            time.sleep(0.1)
        return True
    return True


def main(argv: list[str] | None = None) -> None:
    import argparse
    import sys

    from steps.offline import go_offline

    parser = argparse.ArgumentParser(description="Run the local SageMaker control plane of a workspace.")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    args = parser.parse_args(argv)
    go_offline()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(serve(args.workspace, host=args.host, port=args.port, region=args.region,
                   ready=lambda url: log.info("the local SageMaker control plane listens on %s", url)))


if __name__ == "__main__":
    main()


def local_client(workspace: Path, *, region: str = "us-east-1", service: str = "sagemaker", config: Any = None,
                 endpoint_url: str | None = None) -> Any:
    """A boto3 client of a local control plane: `endpoint_url` (`GENAIOPS_SAGEMAKER_ENDPOINT_URL`), else the
    workspace's, started on demand."""
    import boto3
    from botocore.config import Config

    url = endpoint_url or os.environ.get("GENAIOPS_SAGEMAKER_ENDPOINT_URL") or ensure(workspace)
    return boto3.client(service, endpoint_url=url, region_name=region, aws_access_key_id="local",
                        aws_secret_access_key="local",
                        config=Config(retries={"max_attempts": 2, "mode": "standard"}, read_timeout=900).merge(
                            config or Config()))
