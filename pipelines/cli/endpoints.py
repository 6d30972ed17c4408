"""`genaiops endpoints`, `invoke` and `sagemaker-api`: endpoints through SageMaker's API (the local control plane on
the local backend), so what they show is what `aws sagemaker list-endpoints --endpoint-url ...` shows."""

from __future__ import annotations

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


def _client_error(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', exc)}"


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
        variant["sampling_percent" if shadow else "weight"] = number
    return variant


def _resolve(settings: Any, pipeline: Any, item: dict[str, Any]) -> Any:
    """A variant's package: a registered version's (models:/NAME/N, models:/NAME@ALIAS), or a folder or archive
    (served by the local control plane; SageMaker takes S3 artifacts only)."""
    from contracts import tags as T
    from pipelines.backends import make_registry
    from serving.deployer import DeploymentError, Version
    from serving.endpoints import VariantSpec

    model = str(item.pop("model"))
    if model.startswith("models:/"):
        name, _, selector = model.removeprefix("models:/").partition("/")
        name, _, alias = name.partition("@")
        registry = make_registry(settings, pipeline.model_copy(update={"model_name": name}))
        found = registry.alias_version(alias) if alias else registry.find(selector)
        if found is None:
            fail(f"--variant {item['name']}={model}: no such registered version in {settings.tracking_uri}",
                 EXIT_USAGE)
        try:
            version = Version.of_registered(name, found.version, found.tags)
        except DeploymentError as exc:
            fail(f"--variant {item['name']}={model}: {exc}", EXIT_USAGE)
        return VariantSpec(**item, package_uri=version.package_uri, image=version.image,
                           registered={T.MODEL: name, T.VERSION: found.version})
    path = Path(model).expanduser()
    if not path.exists():
        fail(f"--variant {item['name']}={model}: model {model!r} does not exist", EXIT_FAILED)
    if path.is_dir() and not any((path / marker).exists() for marker in ("MLmodel", "config.json", "code/inference.py")):
        fail(f"--variant {item['name']}={model}: model {model!r} is neither an MLflow model (no MLmodel), a Hugging "
             "Face folder (no config.json) nor a model package (no code/inference.py)", EXIT_FAILED)
    return VariantSpec(**item, package_uri=path.resolve().as_uri())


def _table(endpoints: list[Any]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("endpoint", "status", "variant", "kind", "weight/%", "serves", "variant status"):
        table.add_column(column)
    for endpoint in endpoints:
        for index, variant in enumerate(endpoint.variants or [None]):
            head = [endpoint.name, endpoint.status] if index == 0 else ["", ""]
            if variant is None:
                table.add_row(*head, "", "", "", "", "")
                continue
            share = f"{variant.sampling_percent:g}%" if variant.shadow else f"{variant.weight:g}"
            status = variant.status + (f": {variant.message}" if variant.message else "")
            serves = (variant.registered or variant.model) + (f" ({variant.build} build)" if variant.build else "")
            table.add_row(*head, variant.name, "shadow" if variant.shadow else "production", share, serves, status)
    return table


def _sagemaker() -> tuple[Any, Any, Any]:
    from pipelines.backends import make_sagemaker

    settings, pipeline = load(None)
    return settings, pipeline, make_sagemaker(settings)


def _wait(deployer: Any, name: str) -> None:
    from serving.deployer import DeploymentError

    try:
        deployer.wait_in_service(name)
    except DeploymentError as exc:
        fail(str(exc), EXIT_FAILED)


@endpoints_app.command("create")
def endpoints_create(
    name: Annotated[str, typer.Argument(help="Endpoint name.")],
    variant: Annotated[list[str], typer.Option("--variant", "-v",
                                               help="Production variant NAME=MODEL[:WEIGHT]; repeat for more. MODEL is "
                                                    "a registered version (models:/name/3, models:/name@champion) or, "
                                                    "on the local backend, a folder.")],
    shadow: Annotated[list[str] | None, typer.Option("--shadow", "-s",
                                                     help="Shadow variant NAME=MODEL[:PERCENT mirrored] (SageMaker "
                                                          "takes one, beside one production variant).")] = None,
    shadow_share: Annotated[float, typer.Option(help="Share of the time a local shadow may compute while production "
                                                     "has requests in flight (0: only when production is idle).",
                                                min=0, max=1)] = 0.1,
    capture: Annotated[float, typer.Option(help="Percentage of requests captured (0 turns capture off).",
                                           min=0, max=100)] = 100.0,
    timeout: Annotated[float, typer.Option(help="Per-request timeout in seconds.", min=1)] = 60.0,
    max_batch_size: Annotated[int | None, typer.Option(help="Requests batched into one generate call (default: what "
                                                            "the served build asks for, else 8).", min=1, max=64)] = None,
    config: ConfigOption = None,
) -> None:
    """Create an endpoint (CreateModel, CreateEndpointConfig, CreateEndpoint) and wait until it is InService."""
    from botocore.exceptions import ClientError

    from pipelines.backends import capture_uri, make_deployer
    from serving import endpoints
    from serving.deployer import LOCAL_ROLE

    go_offline()
    settings, pipeline = load(config)
    items = [_variant_option(v, shadow=False) for v in variant] + [_variant_option(v, shadow=True) for v in shadow or []]
    try:
        endpoints.check(name, [endpoints.VariantSpec(package_uri="", **{k: v for k, v in item.items() if k != "model"})
                               for item in items])
    except ValueError as exc:
        fail(f"endpoint {name}: {exc}", EXIT_USAGE)
    variants = [_resolve(settings, pipeline, item) for item in items]
    deployer = make_deployer(settings, pipeline)
    try:
        endpoints.create(deployer.client, name, variants, role_arn=settings.sagemaker_role_arn or LOCAL_ROLE,
                         instance_type=pipeline.deployment.instance_type, capture_uri=capture_uri(settings),
                         capture_percent=capture, timeout_s=timeout, max_batch_size=max_batch_size,
                         shadow_share=shadow_share)
    except ClientError as exc:
        fail(f"endpoint {name}: {_client_error(exc)}", EXIT_FAILED)
    err.print(f"{name}: Creating")
    _wait(deployer, name)
    _invoke_hints(settings, name)


def _invoke_hints(settings: Any, name: str) -> None:
    from pipelines.backends import capture_uri, runtime_url

    url = runtime_url(settings)
    out.print(f"endpoint {name} InService (SageMaker Runtime at {url})")
    out.print(f"  invoke:  genaiops invoke {name} --data '{{\"inputs\": \"...\"}}'")
    out.print(f"  boto3:   boto3.client('sagemaker-runtime', endpoint_url='{url}').invoke_endpoint("
              f"EndpointName='{name}', ...)")
    out.print(f"  capture: {capture_uri(settings)}/{name}")


@endpoints_app.command("list")
def endpoints_list(as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False) -> None:
    """Every endpoint (ListEndpoints), with its variants."""
    from serving.endpoints import EndpointNotFoundError, names, served

    _, _, client = _sagemaker()
    found = []
    for name in names(client):
        try:
            found.append(served(client, name))
        except EndpointNotFoundError:  # deleted meanwhile
            continue
    if as_json:
        out.print_json(data=[e.model_dump() for e in found])
    elif not found:
        out.print("no endpoints; create one with `genaiops endpoints create NAME --variant NAME=MODEL`")
    else:
        out.print(_table(found))


@endpoints_app.command("describe")
def endpoints_describe(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts.")] = False,
) -> None:
    """One endpoint: status, variants with weights, what each serves, where it captures."""
    from serving.endpoints import EndpointNotFoundError, served

    _, _, client = _sagemaker()
    try:
        endpoint = served(client, name)
    except EndpointNotFoundError:
        fail(f"no endpoint named {name!r}", EXIT_FAILED)
    if as_json:
        out.print_json(data=endpoint.model_dump())
        return
    out.print(_table([endpoint]))
    out.print(f"config {endpoint.config}; capture {endpoint.capture or 'off'}"
              + (f" ({endpoint.capture_percent:g}%)" if endpoint.capture else ""))
    if endpoint.failure_reason:
        out.print(f"failure: {endpoint.failure_reason}")


@endpoints_app.command("update-weights")
def endpoints_update_weights(
    name: str,
    weights: Annotated[list[str], typer.Argument(help="VARIANT=WEIGHT for each production variant to change.")],
) -> None:
    """Change traffic weights while serving (UpdateEndpointWeightsAndCapacities)."""
    from botocore.exceptions import ClientError

    from serving import endpoints

    parsed: dict[str, float] = {}
    for item in weights:
        variant, _, value = item.partition("=")
        try:
            parsed[variant] = float(value)
        except ValueError:
            fail(f"{item!r}: expected VARIANT=WEIGHT with a number", EXIT_USAGE)
        if parsed[variant] < 0:
            fail(f"{item!r}: a weight cannot be negative", EXIT_USAGE)
    from pipelines.backends import make_deployer

    settings, pipeline = load(None)
    deployer = make_deployer(settings, pipeline)
    try:
        endpoints.update_weights(deployer.client, name, parsed)
    except ClientError as exc:
        fail(f"endpoint {name}: {_client_error(exc)}", EXIT_FAILED)
    _wait(deployer, name)
    out.print(_table([endpoints.served(deployer.client, name)]))


@endpoints_app.command("delete")
def endpoints_delete(name: str, config: ConfigOption = None) -> None:
    """Delete the endpoint, its endpoint configs, the models it served and its alarms (capture and metrics stay)."""
    from pipelines.backends import make_alarms, make_deployer

    go_offline()
    settings, pipeline = load(config)
    deployer = make_deployer(settings, pipeline, progress=lambda text: err.print(text))
    if deployer.describe(name) is None:
        fail(f"no endpoint named {name!r}", EXIT_FAILED)
    deployer.remove(name)
    make_alarms(settings).sync(name, [])
    out.print(f"endpoint {name} deleted")


@endpoints_app.command("gc")
def endpoints_gc(config: ConfigOption = None) -> None:
    """Delete endpoints whose `genaiops:expires-at` tag has passed (temporary evaluation endpoints a killed run
    left), with their endpoint configs and models."""
    go_offline()
    settings, pipeline = load(config)
    from pipelines.backends import make_deployer
    from serving.evaluation_endpoint import collect

    removed = collect(make_deployer(settings, pipeline, progress=lambda text: err.print(text)))
    out.print("\n".join(removed) if removed else "no expired endpoint")


@app.command("invoke")
def invoke(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    data: Annotated[str, typer.Option("--data", "-d", help="Request body (JSON), or @FILE.")],
    target_variant: Annotated[str | None, typer.Option(help="Send to this production variant.")] = None,
    inference_id: Annotated[str | None, typer.Option(help="Recorded with the captured request.")] = None,
) -> None:
    """Invoke an endpoint through SageMaker Runtime (boto3's sagemaker-runtime client); prints the answer."""
    from botocore.exceptions import ClientError

    from pipelines.backends import make_runtime

    settings, _ = load(None)
    try:
        body = Path(data[1:]).read_bytes() if data.startswith("@") else data.encode()
    except OSError as exc:
        fail(f"--data {data}: {exc.strerror or exc}", EXIT_USAGE)
    extra = {**({"TargetVariant": target_variant} if target_variant else {}),
             **({"InferenceId": inference_id} if inference_id else {})}
    try:
        answer = make_runtime(settings).invoke_endpoint(EndpointName=endpoint, Body=body, ContentType="application/json",
                                                        Accept="application/json", **extra)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
        fail(f"{status} {_client_error(exc)}", EXIT_FAILED)
    err.print(f"variant: {answer.get('InvokedProductionVariant')}")
    out.print(answer["Body"].read().decode(), markup=False)


@app.command("sagemaker-api")
def sagemaker_api(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: a free one).")] = 0,
    stop_background: Annotated[bool, typer.Option("--stop", help="Stop the workspace's control plane and every "
                                                                 "endpoint process it started instead.")] = False,
) -> None:
    """Run the local SageMaker control plane in the foreground and print its URL.

    Any boto3 `sagemaker` or `sagemaker-runtime` client, or `aws sagemaker ... --endpoint-url URL`, talks to it as to
    SageMaker (models, endpoint configs, endpoints, blue/green updates, invocations). The local backend starts one on
    demand in the background; `--stop` stops it and its endpoints. Ctrl-C or SIGTERM stops this one and its
    endpoints; started again, it serves every endpoint that was InService."""
    from pipelines.backends import BackendError, serve_twin, stop_twin

    settings, _ = load(None)
    if stop_background:
        stopped = stop_twin(settings)
        out.print("stopped " + ", ".join(stopped) if stopped else "no local SageMaker control plane or endpoint runs")
        return
    go_offline()

    def ready(url: str) -> None:
        out.print(f"local SageMaker control plane on {url} (workspace {settings.root}); Ctrl-C stops it")
        out.print(f"  aws sagemaker list-endpoints --endpoint-url {url}")
        out.print(f"  export GENAIOPS_SAGEMAKER_ENDPOINT_URL={url}")

    try:
        serve_twin(settings, port=port, ready=ready)
    except BackendError as exc:
        fail(str(exc), EXIT_USAGE)
    except RuntimeError as exc:
        fail(str(exc), EXIT_FAILED)
    except OSError as exc:
        fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}", EXIT_FAILED)
