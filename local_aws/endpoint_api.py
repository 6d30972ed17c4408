"""SageMaker endpoints in the control plane: `CreateEndpoint`, `DescribeEndpoint`, `ListEndpoints`,
`UpdateEndpoint` (blue/green with guardrails), `UpdateEndpointWeightsAndCapacities`, `DeleteEndpoint`, each over
one local endpoint. Long operations run on the control plane's workers (`local_aws.workers`)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from local_aws.blue_green import BlueGreen, Shift
from local_aws.cloud import Cloud
from local_aws.endpoint import EndpointConfig
from local_aws.endpoints import LocalEndpointError, LocalEndpoints
from local_aws.models import Models
from local_aws.records import Records, Tags
from local_aws.sagemaker_api import ApiError, timestamp, validation
from local_aws.workers import Workers

log = logging.getLogger("local_aws.endpoint_api")

ACTIVE = ("Creating", "Updating", "RollingBack", "Deleting", "SystemUpdating")


class Endpoints:
    """The endpoint actions, over the workspace's local endpoints."""

    def __init__(self, records: Records, tags: Tags, models: Models, local: LocalEndpoints, cloud: Cloud,
                 workers: Workers) -> None:
        self.records, self.tags, self.models, self.local, self.cloud = records, tags, models, local, cloud
        self.workers = workers
        self.blue_green = BlueGreen(records, local, cloud, models.capture, workers.check)

    def _local(self, name: str, config: dict[str, Any]) -> EndpointConfig:
        return EndpointConfig(name=name, variants=self.models.fleet(config), capture=self.models.capture(config),
                              timeout_s=self.models.timeout(config), metrics=self.cloud.endpoint_metrics)

    # --- create, describe, list ------------------------------------------------------------

    def create_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name, config_name = params["EndpointName"], params["EndpointConfigName"]
        self.records.refuse_existing("endpoints", name)  # checked again under the lock; this spares the unpacking
        local = self._local(name, self.records.need("endpoint-configs", config_name))
        with self.records.lock:
            self.records.refuse_existing("endpoints", name)
            now = timestamp()
            record = {"EndpointName": name, "EndpointArn": self.records.arn("endpoints", name),
                      "EndpointConfigName": config_name, "EndpointStatus": "Creating", "CreationTime": now,
                      "LastModifiedTime": now}
            self.records.write("endpoints", name, record)
            self.tags.put(record["EndpointArn"], params.get("Tags") or [])
            self.workers.start(name, lambda: self._create(name, local))
        return {"EndpointArn": record["EndpointArn"]}

    def _create(self, name: str, local: EndpointConfig) -> None:
        try:
            self.local.create(local)
        except LocalEndpointError as exc:
            self.workers.check()
            self.records.update("endpoints", name, EndpointStatus="Failed", FailureReason=str(exc)[:1024])
            return
        self.records.update("endpoints", name, EndpointStatus="InService")

    def describe_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        record = self.records.need("endpoints", name)
        status = record["EndpointStatus"]
        try:
            live = self.local.describe(name)
        except LocalEndpointError:
            live = None
        if status == "InService" and (live is None or live.status == "Failed"):
            status = "Failed"
            record["FailureReason"] = live.failure_reason if live else "the endpoint's host is gone"
        answer = {k: v for k, v in record.items() if not k.startswith("_")}
        answer["EndpointStatus"] = status
        config = self.records.read("endpoint-configs", record["EndpointConfigName"])
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
        model = self.records.read("models", variant["ModelName"]) or {}
        image = (model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]).get("Image", "")
        weight = float(record.get("_weights", {}).get(variant["VariantName"], variant.get("InitialVariantWeight", 1.0)))
        count = int(variant.get("InitialInstanceCount", 1))
        summary: dict[str, Any] = {"VariantName": variant["VariantName"], "CurrentWeight": weight,
                                   "DesiredWeight": weight, "CurrentInstanceCount": count, "DesiredInstanceCount": count}
        if image:
            summary["DeployedImages"] = [{"SpecifiedImage": image, "ResolvedImage": image,
                                          "ResolutionTime": record["CreationTime"]}]
        state = live.get(variant["VariantName"])
        if state is not None and state.status != "InService":
            status = {"Creating": "Creating", "Restarting": "Creating", "Draining": "Deleting"}.get(state.status,
                                                                                                    "Updating")
            summary["VariantStatus"] = [{"Status": status, "StatusMessage": state.last_error[:1024]}]
        return summary

    def list_endpoints(self, params: dict[str, Any]) -> dict[str, Any]:
        token = params.get("NextToken") or "0"
        if not token.isdigit():
            raise validation(f"Invalid pagination token {token!r}.")
        bounds = {key: float(params[key]) for key in ("CreationTimeBefore", "CreationTimeAfter",
                                                      "LastModifiedTimeBefore", "LastModifiedTimeAfter") if key in params}
        summaries = []
        for name in self.records.names("endpoints"):
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
        start, size = int(token), int(params.get("MaxResults", 10))
        answer: dict[str, Any] = {"Endpoints": summaries[start:start + size]}
        if start + size < len(summaries):
            answer["NextToken"] = str(start + size)
        return answer

    # --- change ----------------------------------------------------------------------------

    def delete_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        with self.records.lock:
            record = self.records.need("endpoints", name)
            if record["EndpointStatus"] in ACTIVE:
                raise validation(f'Cannot delete in-progress endpoint "{record["EndpointArn"]}" '
                                 f"({record['EndpointStatus']}).")
            self.records.update("endpoints", name, EndpointStatus="Deleting")
        self.delete(name, record["EndpointArn"])
        return {}

    def delete(self, name: str, endpoint_arn: str) -> None:
        """The endpoint's processes, then its record and tags."""
        try:
            with contextlib.suppress(LocalEndpointError):  # a Failed endpoint may have no local endpoint left
                self.local.delete(name)
        except Exception as exc:
            self.records.update("endpoints", name, EndpointStatus="Failed",
                                FailureReason=f"DeleteEndpoint failed: {exc}"[:1024])
            raise
        with self.records.lock:
            self.records.delete("endpoints", name)
            self.tags.put(endpoint_arn, None)

    def update_weights(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointName"]
        with self.records.lock:
            record = self.records.need("endpoints", name)
            if record["EndpointStatus"] != "InService":
                raise validation(f'Cannot update in-progress endpoint "{record["EndpointArn"]}".')
            config = self.records.need("endpoint-configs", record["EndpointConfigName"])
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
            self.records.update("endpoints", name, EndpointStatus="Updating")
        try:
            self.local.update_weights(name, weights)
        except LocalEndpointError as exc:
            self.records.update("endpoints", name, EndpointStatus="InService")
            raise validation(str(exc)) from None
        except BaseException:
            self.records.update("endpoints", name, EndpointStatus="InService")
            raise
        self.records.update("endpoints", name, EndpointStatus="InService", _weights=weights)
        return {"EndpointArn": record["EndpointArn"]}

    def update_endpoint(self, params: dict[str, Any]) -> dict[str, Any]:
        name, config_name = params["EndpointName"], params["EndpointConfigName"]
        config = self.records.need("endpoint-configs", config_name)
        deployment = params.get("DeploymentConfig") or {}
        plan = Shift.of(deployment, sum(int(v["InitialInstanceCount"]) for v in config["ProductionVariants"]))
        missing = self.cloud.missing_alarms(plan.alarms) if plan.alarms else []
        if missing:
            raise validation(f"AutoRollbackConfiguration names alarm(s) that do not exist: {', '.join(missing)}.")
        self.records.need("endpoints", name)
        green = self.models.fleet(config)  # unpacked before the lock: a large package takes a while
        with self.records.lock:
            record = self.records.need("endpoints", name)
            if record["EndpointStatus"] != "InService":
                raise validation(f'Cannot update in-progress endpoint "{record["EndpointArn"]}".')
            if config_name == record["EndpointConfigName"]:
                raise validation(f"The endpoint {name} already serves endpoint configuration {config_name}; "
                                 "create a new endpoint configuration to update it.")
            now = timestamp()
            self.records.update("endpoints", name, EndpointStatus="Updating", LastModifiedTime=now, FailureReason=None,
                                _deployment=deployment, PendingDeploymentSummary={
                                    "EndpointConfigName": config_name, "StartTime": now,
                                    "ProductionVariants": [{"VariantName": v["VariantName"],
                                                            "DesiredWeight": float(v.get("InitialVariantWeight", 1.0)),
                                                            "InstanceType": v["InstanceType"],
                                                            "DesiredInstanceCount": int(v["InitialInstanceCount"]),
                                                            "VariantStatus": [{"Status": "Creating"}]}
                                                           for v in config["ProductionVariants"]]})
            self.workers.start(name, lambda: self.blue_green.run(name, record["EndpointConfigName"], config, green, plan,
                                                          deployment))
        return {"EndpointArn": record["EndpointArn"]}
