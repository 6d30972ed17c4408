"""The local SageMaker control plane: SageMaker's endpoint API over the local endpoints of one workspace.

`CreateModel`, `CreateEndpointConfig`, `CreateEndpoint`, `UpdateEndpoint` (blue/green with deployment guardrails),
`UpdateEndpointWeightsAndCapacities`, their `Describe`, `List` and `Delete` twins and `ListTags`: each request is
checked against botocore's service model and answered as SageMaker answers it, so the one boto3 deployer runs
unchanged here and on AWS. An endpoint is a local endpoint: each of its variants serves its model's
`ModelDataUrl` (a `model.tar.gz`, unpacked) through the package's own `code/inference.py`, as the SageMaker
container would. SageMaker Runtime's `InvokeEndpoint` is answered at the same URL.

State lives in `<workspace>/sagemaker/`, so a control plane started again finds every model, config and endpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from local_aws.cloud import CloudKind, cloud_of
from local_aws.endpoint_api import Endpoints
from local_aws.endpoints import LocalEndpoints
from local_aws.model_data import ModelData
from local_aws.models import Models
from local_aws.records import Records, Tags
from local_aws.recovery import Recovery
from local_aws.runtime import Runtime
from local_aws.sagemaker_api import ApiError, check
from local_aws.workers import Workers


class ControlPlane:
    """SageMaker's endpoint actions over the local endpoints of one workspace."""

    def __init__(self, workspace: Path, *, region: str = "us-east-1", cloud: CloudKind = "local") -> None:
        self.workspace = workspace.resolve()
        self.region = region
        self.root = self.workspace / "sagemaker"
        self.local = LocalEndpoints(self.workspace)
        self.records = Records(self.root, region)
        self.tags = Tags(self.records)
        self.cloud = cloud_of(cloud, self.workspace, region)
        self.models = Models(self.records, self.tags, ModelData(self.root, region), self._variant_serves)
        self.workers = Workers(self.records)
        self.endpoints = Endpoints(self.records, self.tags, self.models, self.local, self.cloud, self.workers)
        self.recovery = Recovery(self.endpoints)
        self.runtime = Runtime(self.records, self.local)
        models, endpoints = self.models, self.endpoints
        self.actions: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "CreateModel": models.create_model, "DescribeModel": models.describe_model,
            "DeleteModel": models.delete_model, "CreateEndpointConfig": models.create_endpoint_config,
            "DescribeEndpointConfig": models.describe_endpoint_config,
            "DeleteEndpointConfig": models.delete_endpoint_config,
            "CreateEndpoint": endpoints.create_endpoint, "DescribeEndpoint": endpoints.describe_endpoint,
            "UpdateEndpoint": endpoints.update_endpoint,
            "UpdateEndpointWeightsAndCapacities": endpoints.update_weights,
            "ListEndpoints": endpoints.list_endpoints, "DeleteEndpoint": endpoints.delete_endpoint,
            "ListTags": self.tags.list_tags,
        }

    def call(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        """Answer one request; raises ApiError as SageMaker would answer it."""
        handler = self.actions.get(action)
        if handler is None:
            raise ApiError("UnknownOperationException", f"The action {action} is not valid for this web service "
                                                         "(the local SageMaker control plane).")
        check(action, params)
        return handler(params)

    def _variant_serves(self, folder: str) -> bool:
        """Whether a variant of a local endpoint serves an unpacked package."""
        store = self.local.store
        return any(v.model == folder for name in store.names() for v in store.config(name).variants)
