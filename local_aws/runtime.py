"""SageMaker Runtime's `InvokeEndpoint` at the control plane's own URL, as AWS answers both APIs in a region: a
`sagemaker-runtime` client whose `endpoint_url` is the twin's reaches every endpoint by name. Each request goes to
its endpoint's router unchanged (headers, body, target variant, inference id) and its answer comes back unchanged;
what the router cannot be asked for is answered with SageMaker Runtime's errors."""

from __future__ import annotations

import http.client
import threading
from urllib.parse import urlparse

from local_aws.endpoints import LocalEndpointError, LocalEndpoints
from local_aws.records import Records
from local_aws.sagemaker_api import ACCOUNT
from serving.protocol import Reply, error_reply

FORWARDED = ("content-type", "accept", "x-amzn-sagemaker-custom-attributes", "x-amzn-sagemaker-target-variant",
             "x-amzn-sagemaker-inference-id", "x-amzn-sagemaker-target-model", "x-amzn-sagemaker-enable-explanations",
             "x-amzn-sagemaker-target-container-hostname", "x-amzn-sagemaker-session-id", "content-length")
TIMEOUT_S = 3600.0


class Runtime:
    """Forwards invocations to the local endpoints' routers over kept-alive connections (one per thread)."""

    def __init__(self, records: Records, endpoints: LocalEndpoints) -> None:
        self.records, self.endpoints = records, endpoints
        self._local = threading.local()

    def invoke(self, name: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
        if self.records.read("endpoints", name) is None:
            return error_reply(400, f"Endpoint {name} of account {ACCOUNT} not found.")
        try:
            state = self.endpoints.describe(name)
        except LocalEndpointError:
            state = None
        if state is None or state.status not in ("InService", "Updating") or not state.url:
            status = state.status if state else "not serving"
            return error_reply(400, f"Endpoint {name} of account {ACCOUNT} is {status}: it takes invocations when "
                                    "InService.")
        sent = {k: v for k, v in headers.items() if k.lower() in FORWARDED}
        for attempt in (1, 2):  # a kept-alive connection the router closed meanwhile is opened again, once
            connection = self._connection(state.url)
            try:
                connection.request("POST", path, body=body, headers=sent)
                response = connection.getresponse()
                answer = response.read()
                return response.status, {k: v for k, v in response.getheaders()
                                         if k.lower() not in ("content-length", "connection", "keep-alive",
                                                              "transfer-encoding", "date", "server")}, answer
            except (OSError, http.client.HTTPException) as exc:
                self._drop(state.url)
                if attempt == 2 or not isinstance(exc, (http.client.RemoteDisconnected, ConnectionResetError,
                                                        BrokenPipeError)):
                    return error_reply(500, f"Endpoint {name}: its host did not answer: {exc}")
        raise AssertionError("unreachable")

    def _connection(self, url: str) -> http.client.HTTPConnection:
        pool: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        if url not in pool:
            parsed = urlparse(url)
            pool[url] = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=TIMEOUT_S)
        return pool[url]

    def _drop(self, url: str) -> None:
        pool: dict[str, http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        connection = pool.pop(url, None)
        if connection is not None:
            connection.close()
