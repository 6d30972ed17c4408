"""The evaluation harness's generation port answered by an endpoint variant, through boto3's
`sagemaker-runtime` client: what evaluates candidates on the aws backend, where they are served, not loaded.

The prompts, template and decoding settings are the ones the in-process generator uses: a templated
prompt goes out as its raw record (the served model applies the same template, recorded with its
package), questions go out with `prompt_format: chat`, and greedy decoding stays greedy. Requests carry
as many inputs as the container takes in one call (`batch_size`, at most the handler's limit), go to one
variant (`TargetVariant`), and throttling is retried with backoff by botocore's adaptive retry mode.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from steps.generation import GenerationSettings
from steps.prompts import raw_input

MAX_INPUTS = 64  # serving.handler.MAX_INPUTS: what the container takes in one request


class EndpointError(RuntimeError):
    """The endpoint did not answer a batch: the evaluation cannot go on without it."""


def runtime_client(region: str, endpoint_url: str | None = None, max_attempts: int = 8) -> Any:
    """A `sagemaker-runtime` client that retries throttling with backoff (botocore's adaptive mode)."""
    import boto3
    from botocore.config import Config

    local = {"aws_access_key_id": "local", "aws_secret_access_key": "local"} if endpoint_url else {}
    return boto3.client("sagemaker-runtime", region_name=region, endpoint_url=endpoint_url,
                        config=Config(retries={"max_attempts": max_attempts, "mode": "adaptive"}, read_timeout=900,
                                      connect_timeout=10), **local)


class EndpointGenerator:
    """One production variant of an endpoint, as a `Generator`."""

    def __init__(self, runtime: Any, endpoint: str, variant: str, *, template: str, name: str | None = None) -> None:
        self.runtime, self.endpoint, self.variant, self.template = runtime, endpoint, variant, template
        self.name = name or variant

    def complete(self, prompts: Sequence[str], settings: GenerationSettings) -> tuple[list[str], list[float]]:
        return self._generate([raw_input(self.template, p) for p in prompts], settings)

    def ask(self, questions: Sequence[str], settings: GenerationSettings) -> list[str]:
        return self._generate(list(questions), settings.model_copy(update={"prompt_format": "chat"}))[0]

    def _generate(self, inputs: Sequence[str], settings: GenerationSettings) -> tuple[list[str], list[float]]:
        size = max(1, min(settings.batch_size, MAX_INPUTS))
        outputs: list[str] = []
        latencies: list[float] = []
        for start in range(0, len(inputs), size):
            batch = list(inputs[start: start + size])
            began = time.perf_counter()
            answer = self._invoke({"inputs": batch, "parameters": _parameters(settings)})
            if not isinstance(answer, list) or len(answer) != len(batch):
                raise EndpointError(f"{self.endpoint}/{self.variant}: {len(batch)} inputs got an answer of "
                                    f"{len(answer) if isinstance(answer, list) else type(answer).__name__}")
            outputs.extend(str(item.get("generated_text", "")) for item in answer)
            latencies.extend([(time.perf_counter() - began) / len(batch)] * len(batch))
        return outputs, latencies

    def _invoke(self, body: dict[str, Any]) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.runtime.invoke_endpoint(EndpointName=self.endpoint, TargetVariant=self.variant,
                                                    ContentType="application/json", Accept="application/json",
                                                    Body=json.dumps(body))
            answer = json.loads(response["Body"].read())
        except (ClientError, BotoCoreError) as exc:
            raise EndpointError(f"{self.endpoint}/{self.variant} did not answer: {exc}") from exc
        if response.get("InvokedProductionVariant", self.variant) != self.variant:
            raise EndpointError(f"{self.endpoint}: asked {self.variant}, answered by {response['InvokedProductionVariant']}")
        return answer


def _parameters(settings: GenerationSettings) -> dict[str, Any]:
    """The decoding settings as the container's parameters; temperature 0 is greedy, as in process."""
    parameters: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "prompt_format": settings.prompt_format}
    if settings.temperature > 0:
        parameters.update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
                          seed=settings.seed, **({"top_k": settings.top_k} if settings.top_k else {}))
    else:
        parameters["do_sample"] = False
    return parameters
