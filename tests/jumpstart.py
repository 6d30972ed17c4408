"""Offline SageMaker JumpStart: moto for the AWS APIs, and a botocore hook that answers
DescribeHubContent (which moto lacks) with a JumpStart spec fixture of the same shape."""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path
from typing import Any

import boto3

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "jumpstart"
ROLE_ARN = "arn:aws:iam::123456789012:role/genaiops-training"


def spec(model_id: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{model_id}.json").read_text())


def answer_describe_hub_content(params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
    """A botocore before-call handler: returning (response, parsed) short-circuits the HTTP call."""
    from botocore.awsrequest import AWSResponse

    body = params.get("body") or b"{}"
    request = json.loads(body.decode() if isinstance(body, bytes) else body)
    record = spec(request["HubContentName"])
    now = datetime.datetime.now(datetime.UTC)
    parsed = {
        **{k: v for k, v in record.items() if k != "HubContentDocument"},
        "HubContentDocument": json.dumps(record["HubContentDocument"]),
        "HubContentArn": f"arn:aws:sagemaker:us-east-1:aws:hub-content/SageMakerPublicHub/Model/"
                         f"{record['HubContentName']}/{record['HubContentVersion']}",
        "HubArn": "arn:aws:sagemaker:us-east-1:aws:hub/SageMakerPublicHub",
        "HubContentStatus": "Available",
        "CreationTime": now,
        "ResponseMetadata": {"HTTPStatusCode": 200},
    }
    return AWSResponse(url="https://sagemaker.us-east-1.amazonaws.com", status_code=200, headers={}, raw=None), parsed


def jumpstart_session(calls: dict[str, list[dict[str, Any]]], bucket: str) -> Any:
    """A sagemaker Session whose DescribeHubContent is answered from fixtures and whose
    SageMaker requests are recorded in `calls` by operation name, exactly as sent."""
    from sagemaker.core.helper.session_helper import Session

    boto_session = boto3.Session(region_name="us-east-1")
    events = boto_session._session  # the botocore session behind it
    events.register("before-call.sagemaker.DescribeHubContent", answer_describe_hub_content)

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        calls.setdefault(model.name, []).append(copy.deepcopy(params))

    events.register("provide-client-params.sagemaker.*", record)
    return Session(boto_session=boto_session, default_bucket=bucket)


def create_role() -> str:
    boto3.client("iam").create_role(RoleName="genaiops-training", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                       "Principal": {"Service": "sagemaker.amazonaws.com"}}]}))
    return ROLE_ARN
