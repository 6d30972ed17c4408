"""`genaiops endpoints` and `invoke`: local endpoints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pipelines.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    ConfigOption,
    app,
    endpoints_app,
    err,
    fail,
    load,
    out,
)
from pipelines.offline import go_offline


def _endpoints() -> Any:
    from serving.local import LocalEndpoints

    settings, _ = load(None)
    if settings.backend != "local":
        fail("`genaiops endpoints` manages local endpoints; on the aws backend endpoints are SageMaker's", EXIT_USAGE)
    # Variants given as models:/ URIs load from the workspace's registry.
    os.environ.setdefault("MLFLOW_TRACKING_URI", settings.tracking_uri)
    return LocalEndpoints(settings.root)


def _variant_option(text: str, *, shadow: bool) -> dict[str, Any]:
    """NAME=MODEL[:WEIGHT] (production) or NAME=MODEL[:PERCENT] (shadow)."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        fail(f"{'--shadow' if shadow else '--variant'} {text!r}: expected NAME=MODEL[:{'PERCENT' if shadow else 'WEIGHT'}]",
              EXIT_USAGE)
    model, number = rest, None
    head, colon, tail = rest.rpartition(":")
    if colon and head and not tail.startswith("/"):
        try:
            number = float(tail)
            model = head
        except ValueError:
            pass
    variant: dict[str, Any] = {"name": name, "model": model, "shadow": shadow}
    if number is not None:
        variant["sampling_percentage" if shadow else "weight"] = number
    return variant


def _state_table(states: list[Any]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("endpoint", "status", "url", "variant", "kind", "weight/%", "variant status", "restarts"):
        table.add_column(column)
    for state in states:
        rows = state.variants or [None]
        for index, variant in enumerate(rows):
            head = [state.name, state.status, state.url] if index == 0 else ["", "", ""]
            if variant is None:
                table.add_row(*head, "", "", "", "", "")
                continue
            share = f"{variant.weight:g}" if not variant.shadow else "shadow"
            name = f"{variant.name} ({variant.fleet})" if variant.fleet else variant.name  # a blue/green fleet
            table.add_row(*head, name, "shadow" if variant.shadow else "production", share,
                          variant.status, str(variant.restarts))
    return table


@endpoints_app.command("create")
def endpoints_create(
    name: Annotated[str, typer.Argument(help="Endpoint name.")],
    variant: Annotated[list[str], typer.Option("--variant", "-v",
                                               help="Production variant NAME=MODEL[:WEIGHT]; repeat for more. MODEL is "
                                                    "an MLflow URI (models:/name/3, models:/name@champion) or folder, "
                                                    "or a Hugging Face folder.")],
    shadow: Annotated[list[str] | None, typer.Option("--shadow", "-s",
                                                     help="Shadow variant NAME=MODEL[:PERCENT mirrored].")] = None,
    shadow_share: Annotated[float, typer.Option(help="Share of the time a shadow may compute while production has "
                                                     "requests in flight (0: only when production is idle).",
                                                min=0, max=1)] = 0.1,
    capture: Annotated[float, typer.Option(help="Percentage of requests captured (0 turns capture off).",
                                           min=0, max=100)] = 100.0,
    timeout: Annotated[float, typer.Option(help="Per-request timeout in seconds.", min=0.001)] = 60.0,
    port: Annotated[int, typer.Option(help="Router port on 127.0.0.1 (0: a free one).")] = 0,
    max_batch_size: Annotated[int, typer.Option(help="Requests batched into one generate call.", min=1)] = 8,
) -> None:
    """Start a local endpoint and wait until it is InService."""
    from pydantic import ValidationError

    from serving.endpoint import EndpointConfig
    from serving.local import EndpointError

    go_offline()
    endpoints = _endpoints()
    variants = [_variant_option(v, shadow=False) for v in variant] + [_variant_option(v, shadow=True)
                                                                      for v in shadow or []]
    for item in variants:
        item["max_batch_size"] = max_batch_size
        if item["shadow"]:
            item["share_while_busy"] = shadow_share
    try:
        config = EndpointConfig.model_validate({
            "name": name, "variants": variants, "timeout_s": timeout, "port": port,
            "capture": {"enabled": capture > 0, "sampling_percentage": capture}})
    except ValidationError as exc:
        first = exc.errors()[0]
        fail(f"endpoint {name}: {'.'.join(str(p) for p in first['loc'])}: {first['msg']}".replace(": : ", ": "),
              EXIT_USAGE)

    def progress(state: Any) -> None:
        parts = ", ".join(f"{v.name} {v.status}" for v in state.variants)
        err.print(f"{state.name}: {state.status}" + (f" ({parts})" if parts else ""))

    try:
        state = endpoints.create(config, progress=progress)
    except EndpointError as exc:
        fail(str(exc), EXIT_FAILED)
    out.print(f"endpoint {state.name} InService at {state.url}")
    out.print(f"  invoke:  genaiops invoke {state.name} --data '{{\"inputs\": \"...\"}}'")
    out.print(f"  boto3:   boto3.client('sagemaker-runtime', endpoint_url='{state.url}').invoke_endpoint("
              f"EndpointName='{state.name}', ...)")
    out.print(f"  capture: {state.capture}   metrics: {state.metrics}")


@endpoints_app.command("list")
def endpoints_list(as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False) -> None:
    """Every local endpoint of the workspace, with its variants."""
    states = _endpoints().list()
    if as_json:
        out.print_json(data=[s.model_dump() for s in states])
    elif not states:
        out.print("no endpoints; create one with `genaiops endpoints create NAME --variant NAME=MODEL`")
    else:
        out.print(_state_table(states))


@endpoints_app.command("describe")
def endpoints_describe(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """One endpoint: status, URL, variants with weights, restarts and recent events."""
    from serving.local import EndpointError

    try:
        state = _endpoints().describe(name)
    except EndpointError as exc:
        fail(str(exc), EXIT_FAILED)
    if as_json:
        out.print_json(data=state.model_dump())
        return
    out.print(_state_table([state]))
    if state.failure_reason:
        out.print(f"failure: {state.failure_reason}")
    for event in state.events[-10:]:
        out.print(f"  {event}")


@endpoints_app.command("update-weights")
def endpoints_update_weights(
    name: str,
    weights: Annotated[list[str], typer.Argument(help="VARIANT=WEIGHT for each production variant to change.")],
) -> None:
    """Change traffic weights while serving (UpdateEndpointWeightsAndCapacities)."""
    from serving.local import EndpointError

    parsed: dict[str, float] = {}
    for item in weights:
        variant, _, value = item.partition("=")
        try:
            parsed[variant] = float(value)
        except ValueError:
            fail(f"{item!r}: expected VARIANT=WEIGHT with a number", EXIT_USAGE)
        if parsed[variant] < 0:
            fail(f"{item!r}: a weight cannot be negative", EXIT_USAGE)
    try:
        state = _endpoints().update_weights(name, parsed)
    except EndpointError as exc:
        fail(str(exc), EXIT_FAILED)
    out.print(_state_table([state]))


@endpoints_app.command("delete")
def endpoints_delete(name: str) -> None:
    """Stop the endpoint's processes and remove it (capture files and metrics stay)."""
    from serving.local import EndpointError

    try:
        _endpoints().delete(name)
    except EndpointError as exc:
        fail(str(exc), EXIT_FAILED)
    out.print(f"endpoint {name} deleted")


@endpoints_app.command("gc")
def endpoints_gc(config: ConfigOption = None) -> None:
    """Delete endpoints whose `genaiops:expires-at` tag has passed (temporary evaluation endpoints a killed run
    left), with their endpoint configs and models: SageMaker's on the aws backend, the local control plane's here."""
    go_offline()
    settings, pipeline = load(config)
    from pipelines.backends import make_sagemaker
    from serving.deployer import SageMakerDeployer
    from serving.evaluation_endpoint import collect

    deployment = pipeline.deployment
    if deployment.poll_seconds is None and settings.backend == "local":
        deployment = deployment.model_copy(update={"poll_seconds": 1.0})
    deployer = SageMakerDeployer(make_sagemaker(settings), deployment, progress=lambda text: err.print(text))
    removed = collect(deployer)
    out.print("\n".join(removed) if removed else "no expired endpoint")


@app.command("invoke")
def invoke(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    data: Annotated[str, typer.Option("--data", "-d", help="Request body (JSON), or @FILE.")],
    target_variant: Annotated[str | None, typer.Option(help="Send to this production variant.")] = None,
    inference_id: Annotated[str | None, typer.Option(help="Recorded with the captured request.")] = None,
) -> None:
    """Invoke a local endpoint through its SageMaker Runtime route; prints the answer."""
    import urllib.error
    import urllib.request

    from serving.local import EndpointError
    from serving.protocol import INFERENCE_ID, INVOKED_VARIANT, TARGET_VARIANT

    try:
        state = _endpoints().describe(endpoint)
    except EndpointError as exc:
        fail(str(exc), EXIT_FAILED)
    if state.status not in ("InService", "Updating"):
        fail(f"endpoint {endpoint} is {state.status}", EXIT_FAILED)
    body = Path(data[1:]).read_bytes() if data.startswith("@") else data.encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if target_variant:
        headers[TARGET_VARIANT] = target_variant
    if inference_id:
        headers[INFERENCE_ID] = inference_id
    request = urllib.request.Request(f"{state.url}/endpoints/{endpoint}/invocations", data=body, headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=3600) as response:
            err.print(f"variant: {response.headers.get(INVOKED_VARIANT)}")
            out.print(response.read().decode(), markup=False)
    except urllib.error.HTTPError as exc:
        answer = exc.read()
        try:
            message = json.loads(answer).get("message", answer.decode())
        except ValueError:
            message = answer.decode(errors="replace")
        fail(f"{exc.code} {exc.headers.get('x-amzn-ErrorType', '')}: {message}", EXIT_FAILED)


@app.command("sagemaker-api")
def sagemaker_api(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one).")] = 0,
    stop_background: Annotated[bool, typer.Option("--stop", help="Stop the workspace's control plane instead.")] = False,
) -> None:
    """Run the local SageMaker control plane in the foreground and print its URL.

    Any boto3 `sagemaker` client or `aws sagemaker ... --endpoint-url URL` talks to it as to SageMaker
    (models, endpoint configs, endpoints, blue/green updates); `GENAIOPS_SAGEMAKER_ENDPOINT_URL=URL` points
    genaiops at it. The local backend starts one on demand in the background; `--stop` stops that one.
    Endpoints it created keep serving after it stops."""
    from serving import control_plane

    settings, _ = load(None)
    if settings.backend != "local":
        fail("the local SageMaker control plane is for the local backend; on aws, SageMaker answers", EXIT_USAGE)
    if stop_background:
        stopped = control_plane.stop_running(settings.root)
        out.print("stopped the local SageMaker control plane" if stopped else "no local SageMaker control plane runs")
        return
    go_offline()

    def ready(url: str) -> None:
        out.print(f"local SageMaker control plane on {url} (workspace {settings.root}); Ctrl-C stops it")
        out.print(f"  aws sagemaker list-endpoints --endpoint-url {url}")
        out.print(f"  export GENAIOPS_SAGEMAKER_ENDPOINT_URL={url}")

    try:
        control_plane.serve(settings.root, port=port, region=settings.region, ready=ready)
    except RuntimeError as exc:
        fail(str(exc), EXIT_FAILED)
    except OSError as exc:
        fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}", EXIT_FAILED)
