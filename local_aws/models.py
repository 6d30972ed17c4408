"""SageMaker models and endpoint configs in the control plane: created, described, deleted as SageMaker does them,
and turned into what a local endpoint runs (its fleet of variants, its data capture)."""

from __future__ import annotations

from typing import Any

from contracts import container as container_env
from local_aws.endpoint import CaptureConfig, VariantConfig
from local_aws.model_data import ModelData, container, model_data_url
from local_aws.records import Records, Tags
from local_aws.sagemaker_api import timestamp, validation


class Models:
    """`CreateModel`, `DescribeModel`, `DeleteModel` and the endpoint-config actions."""

    def __init__(self, records: Records, tags: Tags, data: ModelData, in_use: Any) -> None:
        self.records, self.tags, self.data = records, tags, data
        self.in_use = in_use  # folder -> whether an endpoint's variant still serves it

    # --- models ----------------------------------------------------------------------------

    def create_model(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["ModelName"]
        containers = [params["PrimaryContainer"]] if "PrimaryContainer" in params else params.get("Containers", [])
        if len(containers) != 1:
            raise validation("The local control plane serves models with exactly one container "
                             "(PrimaryContainer, or Containers with one item).")
        url = model_data_url(containers[0])
        if url is None:
            raise validation("The container needs ModelDataUrl (or ModelDataSource.S3DataSource.S3Uri): the "
                             "local control plane serves a model package, not an image.")
        unpacked = self.data.unpacked(url)  # SageMaker checks that it can read the model data at creation
        with self.records.lock:
            self.records.refuse_existing("models", name)
            record = {**params, "ModelArn": self.records.arn("models", name), "CreationTime": timestamp(),
                      "_unpacked": str(unpacked)}
            self.tags.put(record["ModelArn"], params.get("Tags") or [])
            record.pop("Tags", None)
            self.records.write("models", name, record)
        return {"ModelArn": record["ModelArn"]}

    def describe_model(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in self.records.need("models", params["ModelName"]).items() if not k.startswith("_")}

    def delete_model(self, params: dict[str, Any]) -> dict[str, Any]:
        """As SageMaker: the model goes, endpoints serving it keep serving. Its unpacked package goes too once
        no other model and no endpoint uses it."""
        with self.records.lock:
            record = self.records.need("models", params["ModelName"])
            self.records.delete("models", params["ModelName"])
            self.tags.put(record["ModelArn"], None)
            self.data.release(record.get("_unpacked", ""), self._uses)
        return {}

    def _uses(self, folder: str) -> bool:
        models = (self.records.read("models", name) or {} for name in self.records.names("models"))
        return any(model.get("_unpacked") == folder for model in models) or self.in_use(folder)

    def served(self, model_name: str) -> str:
        """The folder a variant of `model_name` serves."""
        model = self.records.need("models", model_name)
        return str(self.data.unpacked(model_data_url(container(model)) or ""))

    # --- endpoint configs ------------------------------------------------------------------

    def create_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params["EndpointConfigName"]
        with self.records.lock:
            self.records.refuse_existing("endpoint-configs", name)
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
                self.records.need("models", variant["ModelName"])
            if sum(float(v.get("InitialVariantWeight", 1.0)) for v in production) <= 0:
                raise validation("The sum of the InitialVariantWeight of the production variants must be greater "
                                 "than 0.")
            capture = params.get("DataCaptureConfig")
            if capture and not capture["DestinationS3Uri"].startswith(("file://", "s3://")):
                raise validation(f"DataCaptureConfig.DestinationS3Uri {capture['DestinationS3Uri']!r} is not an S3 "
                                 "(or, locally, a file://) URI.")
            record = {**params, "EndpointConfigArn": self.records.arn("endpoint-configs", name),
                      "CreationTime": timestamp()}
            self.tags.put(record["EndpointConfigArn"], params.get("Tags") or [])
            record.pop("Tags", None)
            self.records.write("endpoint-configs", name, record)
        return {"EndpointConfigArn": record["EndpointConfigArn"]}

    def describe_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.records.need("endpoint-configs", params["EndpointConfigName"])

    def delete_endpoint_config(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.records.lock:
            record = self.records.need("endpoint-configs", params["EndpointConfigName"])
            self.records.delete("endpoint-configs", params["EndpointConfigName"])
            self.tags.put(record["EndpointConfigArn"], None)
        return {}

    # --- what a local endpoint runs --------------------------------------------------------

    def fleet(self, config: dict[str, Any]) -> list[VariantConfig]:
        """The local variants of an endpoint config: one fleet, named after the config."""
        from pydantic import ValidationError

        try:
            return self._fleet(config)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise validation(f"Endpoint configuration {config['EndpointConfigName']}: {first['loc'][-1]}: "
                             f"{first['msg']}.") from None

    def timeout(self, config: dict[str, Any]) -> float:
        """The per-request timeout of an endpoint of the config: its containers' SAGEMAKER_MODEL_SERVER_TIMEOUT
        (the longest), else SageMaker's 60 s."""
        values = []
        for variant in [*config["ProductionVariants"], *config.get("ShadowProductionVariants", [])]:
            environment = container(self.records.need("models", variant["ModelName"])).get("Environment") or {}
            if TIMEOUT_ENV in environment:
                try:
                    values.append(float(environment[TIMEOUT_ENV]))
                except ValueError:
                    raise validation(f"Model {variant['ModelName']}: Environment {TIMEOUT_ENV} "
                                     f"{environment[TIMEOUT_ENV]!r} is not a number of seconds.") from None
        return max(values, default=60.0)

    def _fleet(self, config: dict[str, Any]) -> list[VariantConfig]:
        fleet = config["EndpointConfigName"]
        production = config["ProductionVariants"]
        total = sum(float(v.get("InitialVariantWeight", 1.0)) for v in production)
        variants = [VariantConfig(name=v["VariantName"], fleet=fleet, weight=float(v.get("InitialVariantWeight", 1.0)),
                                  model=self.served(v["ModelName"]), **_container_settings(self, v))
                    for v in production]
        for shadow in config.get("ShadowProductionVariants", []):
            # SageMaker mirrors to a shadow the share of requests its weight is of the production weights.
            share = min(100.0, 100.0 * float(shadow.get("InitialVariantWeight", 1.0)) / total)
            variants.append(VariantConfig(name=shadow["VariantName"], fleet=fleet, shadow=True, sampling_percentage=share,
                                          model=self.served(shadow["ModelName"]), **_container_settings(self, shadow)))
        return variants

    @staticmethod
    def capture(config: dict[str, Any]) -> CaptureConfig:
        """Where a local endpoint of the config captures: the destination it was given (a file:// or s3:// URI)."""
        capture = config.get("DataCaptureConfig")
        if not capture or not capture.get("EnableCapture", True):
            return CaptureConfig(enabled=False)
        return CaptureConfig(enabled=True, sampling_percentage=float(capture["InitialSamplingPercentage"]),
                             destination=capture["DestinationS3Uri"])


TIMEOUT_ENV, BATCH_SIZE_ENV, SHADOW_SHARE_ENV = container_env.TIMEOUT, container_env.MAX_BATCH_SIZE, \
    container_env.SHADOW_SHARE


def _container_settings(models: Models, variant: dict[str, Any]) -> dict[str, Any]:
    environment = container(models.records.need("models", variant["ModelName"])).get("Environment") or {}
    settings: dict[str, Any] = {}
    try:
        if BATCH_SIZE_ENV in environment:
            settings["max_batch_size"] = int(environment[BATCH_SIZE_ENV])
        if SHADOW_SHARE_ENV in environment:
            settings["share_while_busy"] = float(environment[SHADOW_SHARE_ENV])
    except ValueError as exc:
        raise validation(f"Model {variant['ModelName']}: Environment {exc}.") from None
    return settings
