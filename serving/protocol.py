"""The SageMaker hosting and runtime contract shared by the model server, the channel and the endpoint router."""

from __future__ import annotations

import json
from typing import Any

TARGET_VARIANT = "X-Amzn-SageMaker-Target-Variant"
INVOKED_VARIANT = "X-Amzn-Invoked-Production-Variant"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
ERROR_TYPE = "x-amzn-ErrorType"
REQUEST_ID = "x-amzn-RequestId"
MODEL_TIME_US = "X-Genaiops-Model-Time-Us"  # time on the model thread for the request's batch: prompts, generate, decode
BATCH_SIZE = "X-Genaiops-Batch-Size"

Reply = tuple[int, dict[str, str], bytes]  # status, headers, body

# What SageMaker Runtime answers for each failure, and what boto3 raises from it.
ERRORS: dict[int, str] = {
    400: "ValidationError",
    404: "ValidationError",
    405: "ValidationError",
    413: "ValidationError",
    424: "ModelError",
    500: "InternalFailure",
    503: "ServiceUnavailable",
}


def error_response(status: int, message: str, *, original_status: int | None = None) -> tuple[bytes, dict[str, str]]:
    """Body and headers of an error, in the shape boto3's sagemaker-runtime client parses."""
    kind = ERRORS.get(status, "InternalFailure")
    body: dict[str, Any] = {"message": message, "Message": message, "ErrorCode": kind}
    if kind == "ModelError":
        body.update(ErrorCode="CLIENT_ERROR_FROM_MODEL", OriginalStatusCode=original_status or 424,
                    OriginalMessage=message)
    return json.dumps(body).encode(), {"Content-Type": "application/json", ERROR_TYPE: kind}


def error_reply(status: int, message: str) -> Reply:
    """An error as status, headers and body."""
    body, headers = error_response(status, message)
    return status, headers, body


def web_error(status: int, message: str) -> Any:
    """The aiohttp response of an error, shared by the model server and the router."""
    from aiohttp import web

    body, headers = error_response(status, message)
    return web.Response(status=status, body=body, headers=headers)
