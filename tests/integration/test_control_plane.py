"""The deployer against the real local SageMaker control plane: boto3 in, real endpoints out.

The control plane runs as its own process (as `genaiops sagemaker-api` runs it); every model
is a real package (`serving.package`) of a tiny model, unpacked and served through the
package's own `code/inference.py`. Waits and baking are seconds long; a rollback is waited on
as the event it is, with a baking period far longer than the test needs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from local_aws.endpoints import LocalEndpoints
from local_aws.server import client as local_client
from local_aws.server import ensure
from local_aws.server import stop as stop_twin
from monitoring.alarms import AlarmSpec, AlarmStore
from serving import package
from serving.deployer import DeploymentConfig, DeploymentError, SageMakerDeployer, Version
from steps.artifacts import LocalStore
from tests.conftest import make_tiny_model
from tests.servers import running

ENDPOINT = "summaries"
BODY = json.dumps({"inputs": "Ana: the parcel is late. Ben: I will call the courier.",
                   "parameters": {"max_new_tokens": 2}}).encode()
FAST = {"instance_type": "ml.m5.large", "poll_seconds": 1, "timeout_seconds": 600, "wait_seconds": 1,
        "bake_seconds": 1}


@pytest.fixture(scope="module")
def plane(tiny_model_dir: Path, smollm2_tokenizer_dir: Path,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workspace = tmp_path_factory.mktemp("control-plane-ws")
    store = LocalStore(workspace / "artifacts")
    second = make_tiny_model(smollm2_tokenizer_dir, tmp_path_factory.mktemp("tiny-2"), seed=2)
    failing = tmp_path_factory.mktemp("tiny-failing") / "model"  # loads, then refuses every request (a ModelError)
    shutil.copytree(tiny_model_dir, failing)
    config = json.loads((failing / "config.json").read_text())
    (failing / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 4}))
    broken = tmp_path_factory.mktemp("tiny-broken") / "model"  # a package whose model cannot load
    shutil.copytree(tiny_model_dir, broken)
    for weights in broken.glob("*.safetensors"):
        weights.write_bytes(b"not weights")

    def version(folder: Path, number: str) -> Version:
        built = package.build(package.ServedModel(weights=str(folder), kind="full", base_model="tiny",
                                                  generation={"max_new_tokens": 2}), store, region="us-east-1",
                              config=package.PackageConfig(instance_type="ml.m5.large"))
        return Version(model="summarizer", version=number, package_uri=built.uri, digest=built.digest,
                       image=built.image)

    url = ensure(workspace)
    client = local_client(workspace)
    try:
        yield {"workspace": workspace, "url": url, "client": client, "store": store,
               "v1": version(tiny_model_dir, "1"), "v2": version(second, "2"), "failing": version(failing, "3"),
               "broken": version(broken, "4")}
    finally:
        stop_twin(workspace)


def deployer(plane: dict[str, Any], **overrides: Any) -> SageMakerDeployer:
    capture = (plane["workspace"] / "capture").as_uri()
    return SageMakerDeployer(plane["client"], DeploymentConfig(**{**FAST, **overrides}), capture_uri=capture)


def invoke(plane: dict[str, Any], target: str | None = None) -> tuple[int, str]:
    """One request to the endpoint as a caller sends it, to SageMaker Runtime's route at the control plane's URL:
    (status, the variant that answered)."""
    url = plane["url"]
    headers = {"Content-Type": "application/json"}
    if target:
        headers["X-Amzn-SageMaker-Target-Variant"] = target
    request = urllib.request.Request(f"{url}/endpoints/{ENDPOINT}/invocations", data=BODY, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers["X-Amzn-Invoked-Production-Variant"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-Amzn-Invoked-Production-Variant", "")


def names(plane: dict[str, Any], kind: str) -> list[str]:
    return sorted(p.stem for p in (plane["workspace"] / "sagemaker" / kind).glob("*.json"))


def test_a_first_deploy_creates_the_endpoint_and_a_second_run_creates_nothing(plane: dict[str, Any]) -> None:
    outcome = deployer(plane).deploy(ENDPOINT, plane["v1"], "all_at_once")
    described = plane["client"].describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointStatus"] == "InService" and described["EndpointConfigName"] == outcome.endpoint_config
    assert [v["VariantName"] for v in described["ProductionVariants"]] == ["v1"]
    assert described["DataCaptureConfig"]["CaptureStatus"] == "Started"
    assert invoke(plane) == (200, "v1")
    model = plane["client"].describe_model(ModelName=plane["v1"].model_name)
    assert model["PrimaryContainer"]["ModelDataUrl"] == plane["v1"].package_uri  # the package, not a folder
    before = (names(plane, "models"), names(plane, "endpoint-configs"))
    again = deployer(plane).deploy(ENDPOINT, plane["v1"], "all_at_once")
    assert not again.changed and again.created == []
    assert (names(plane, "models"), names(plane, "endpoint-configs")) == before


def test_an_ab_update_serves_both_versions_by_weight(plane: dict[str, Any]) -> None:
    outcome = deployer(plane, ab_candidate_weight=0.5).deploy(ENDPOINT, plane["v2"], "ab", champion=plane["v1"])
    described = plane["client"].describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointConfigName"] == outcome.endpoint_config
    assert {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]} == {"v1": 0.5, "v2": 0.5}
    answered = Counter(invoke(plane)[1] for _ in range(30))
    assert set(answered) == {"v1", "v2"}, answered  # 30 fair coin flips all alike: about 1 in 500 million
    assert invoke(plane, target="v2") == (200, "v2")
    client = plane["client"]
    client.update_endpoint_weights_and_capacities(EndpointName=ENDPOINT, DesiredWeightsAndCapacities=[
        {"VariantName": "v2", "DesiredWeight": 0.0}])
    described = client.describe_endpoint(EndpointName=ENDPOINT)
    assert {v["VariantName"]: v["CurrentWeight"] for v in described["ProductionVariants"]} == {"v1": 0.5, "v2": 0.0}
    assert {invoke(plane)[1] for _ in range(10)} == {"v1"}
    with pytest.raises(ClientError, match="must be greater than 0"):
        client.update_endpoint_weights_and_capacities(EndpointName=ENDPOINT, DesiredWeightsAndCapacities=[
            {"VariantName": "v1", "DesiredWeight": 0.0}])


def test_a_shadow_gets_copies_and_answers_no_caller(plane: dict[str, Any]) -> None:
    deployer(plane).deploy(ENDPOINT, plane["v2"], "shadow", champion=plane["v1"])
    described = plane["client"].describe_endpoint(EndpointName=ENDPOINT)
    assert [v["VariantName"] for v in described["ProductionVariants"]] == ["v1"]
    assert [v["VariantName"] for v in described["ShadowProductionVariants"]] == ["v2"]
    assert {invoke(plane) for _ in range(5)} == {(200, "v1")}
    capture = plane["workspace"] / "capture" / ENDPOINT / "v2"
    wait_for_lines(capture, 5)  # the shadow's answers reach the capture files only


def wait_for_lines(folder: Path, count: int) -> None:
    import time

    deadline = time.monotonic() + 300  # an upper bound on a few tiny-model answers, not a race
    while time.monotonic() < deadline:
        lines = sum(len(p.read_text().splitlines()) for p in folder.rglob("*.jsonl")) if folder.exists() else 0
        if lines >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"{folder} did not get {count} captured records")


def test_a_canary_whose_alarm_fires_while_it_bakes_rolls_back_with_no_error_beyond_its_share(
        plane: dict[str, Any]) -> None:
    client = plane["client"]
    first = deployer(plane).deploy(ENDPOINT, plane["v1"], "all_at_once")
    failing = plane["failing"]
    alarm = f"{ENDPOINT}/{failing.variant}/errors"
    AlarmStore(plane["workspace"] / "alarms").put(AlarmSpec.model_validate({
        "name": alarm, "period": 10, "evaluation_periods": 1, "threshold": 0, "comparison": "GreaterThanThreshold",
        "treat_missing_data": "notBreaching",
        "metric": {"namespace": "AWS/SageMaker", "name": "Invocation5XXErrors", "stat": "Sum",
                   "dimensions": {"EndpointName": ENDPOINT, "VariantName": failing.variant}}}))
    results: list[tuple[int, str]] = []
    done = threading.Event()

    def load() -> None:
        while not done.is_set():
            results.append(invoke(plane))

    caller = threading.Thread(target=load)
    caller.start()
    try:
        # The waits are far longer than the rollback needs: only the alarm can end this deployment soon.
        with pytest.raises(DeploymentError, match=f"rolled the update back.*alarm {alarm} is in ALARM"):
            deployer(plane, canary_percent=50, wait_seconds=3600, bake_seconds=3600).deploy(
                ENDPOINT, failing, "canary", rollback_alarms=[alarm])
    finally:
        done.set()
        caller.join()
    described = client.describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointStatus"] == "InService" and described["EndpointConfigName"] == first.endpoint_config
    assert "rolled back" in described["FailureReason"]
    errors = Counter(variant for status, variant in results if status != 200)
    assert set(errors) == {failing.variant}, errors  # the canary's requests failed, nothing else did
    assert {variant for status, variant in results if status == 200} == {"v1"}
    assert failing.model_name not in names(plane, "models")  # what the failed run created is gone
    assert not [n for n in names(plane, "endpoint-configs") if "canary" in n]
    assert invoke(plane) == (200, "v1")


def test_a_linear_shift_completes_and_describe_shows_the_deployment(plane: dict[str, Any]) -> None:
    deployer(plane).deploy(ENDPOINT, plane["v1"], "all_at_once")
    outcome = deployer(plane, linear_step_percent=50).deploy(ENDPOINT, plane["v2"], "linear")
    described = plane["client"].describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointConfigName"] == outcome.endpoint_config and described["EndpointStatus"] == "InService"
    policy = described["LastDeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"]["Type"] == "LINEAR"
    assert invoke(plane) == (200, "v2")
    live = LocalEndpoints(plane["workspace"]).describe(ENDPOINT)
    assert {v.fleet for v in live.variants} == {outcome.endpoint_config}  # the old fleet is gone


def test_a_first_deploy_that_cannot_load_leaves_no_endpoint_config_or_model(plane: dict[str, Any]) -> None:
    before = (names(plane, "models"), names(plane, "endpoint-configs"), names(plane, "endpoints"))
    with pytest.raises(DeploymentError, match="failed"):
        deployer(plane).deploy("fresh", plane["broken"], "all_at_once")
    assert (names(plane, "models"), names(plane, "endpoint-configs"), names(plane, "endpoints")) == before
    assert "fresh" not in LocalEndpoints(plane["workspace"]).store.names()


def test_an_update_cut_short_by_a_killed_control_plane_is_rolled_back_when_it_starts_again(
        plane: dict[str, Any]) -> None:
    import signal
    import time

    serving = deployer(plane).deploy(ENDPOINT, plane["v1"], "all_at_once")
    slow = deployer(plane, wait_seconds=3600, bake_seconds=3600, canary_percent=50)
    plan = slow.plan(ENDPOINT, plane["v2"], "canary")
    client = plane["client"]
    for model in plan.models:
        if model["ModelName"] not in names(plane, "models"):
            client.create_model(**model)
    if plan.config_name not in names(plane, "endpoint-configs"):
        client.create_endpoint_config(**plan.endpoint_config)
    client.update_endpoint(EndpointName=ENDPOINT, EndpointConfigName=plan.config_name,
                           DeploymentConfig=plan.deployment_config)
    deadline = time.monotonic() + 300  # until the canary took its traffic and bakes (an event), bounded
    while client.describe_endpoint(EndpointName=ENDPOINT).get("PendingDeploymentSummary", {}).get(
            "ProductionVariants", [{}])[0].get("VariantStatus", [{}])[0].get("Status") != "Baking":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    server = json.loads((plane["workspace"] / "sagemaker" / "server.json").read_text())
    os.kill(server["pid"], signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):  # this process started it (ensure): reap it
        os.waitpid(server["pid"], 0)
    while running(server["pid"]):
        time.sleep(0.1)
    url = ensure(plane["workspace"])  # a new control plane, which first recovers what the killed one left
    client = local_client(plane["workspace"])
    plane["client"], plane["url"] = client, url
    described = client.describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointStatus"] == "InService" and described["EndpointConfigName"] == serving.endpoint_config
    assert "stopped during the update" in described["FailureReason"]
    assert {v.fleet for v in LocalEndpoints(plane["workspace"]).describe(ENDPOINT).variants} == {serving.endpoint_config}
    assert invoke(plane) == (200, "v1")


def test_a_package_that_cannot_load_leaves_the_old_config_serving_and_nothing_orphaned(plane: dict[str, Any]) -> None:
    serving = deployer(plane).deploy(ENDPOINT, plane["v1"], "all_at_once")
    before = (names(plane, "models"), names(plane, "endpoint-configs"))
    with pytest.raises(DeploymentError, match="failed to start"):
        deployer(plane).deploy(ENDPOINT, plane["broken"], "canary")
    described = plane["client"].describe_endpoint(EndpointName=ENDPOINT)
    assert described["EndpointConfigName"] == serving.endpoint_config and described["EndpointStatus"] == "InService"
    assert (names(plane, "models"), names(plane, "endpoint-configs")) == before
    assert invoke(plane) == (200, "v1")
    # The broken package's unpacked copy went with its model; the serving one stays.
    unpacked = {p.name for p in (plane["workspace"] / "sagemaker" / "model-data").iterdir()}
    assert plane["broken"].digest[:32] not in unpacked and plane["v1"].digest[:32] in unpacked


@pytest.mark.parametrize(("case", "request_", "reason"), [
    ("unknown instance type", {"EndpointConfigName": "c1", "ProductionVariants": [
        {"VariantName": "a", "ModelName": "MODEL", "InstanceType": "ml.nope.large", "InitialInstanceCount": 1}]},
     "Member must satisfy enum value set"),
    ("weights summing to 0", {"EndpointConfigName": "c2", "ProductionVariants": [
        {"VariantName": "a", "ModelName": "MODEL", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1,
         "InitialVariantWeight": 0}]}, "must be greater than 0"),
    ("a missing model", {"EndpointConfigName": "c3", "ProductionVariants": [
        {"VariantName": "a", "ModelName": "no-such-model", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}]},
     'Could not find model "arn:aws:sagemaker:us-east-1:000000000000:model/no-such-model"'),
    ("a shadow without a production variant", {"EndpointConfigName": "c4", "ProductionVariants": [],
                                               "ShadowProductionVariants": [
        {"VariantName": "s", "ModelName": "MODEL", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}]},
     "ProductionVariants"),
])
def test_bad_input_gets_sagemakers_validation_exception_and_changes_nothing(
        plane: dict[str, Any], case: str, request_: dict[str, Any], reason: str) -> None:
    deployer(plane).deploy(ENDPOINT, plane["v1"], "all_at_once")
    model = plane["v1"].model_name
    body = json.loads(json.dumps(request_).replace("MODEL", model))
    before = (names(plane, "models"), names(plane, "endpoint-configs"), names(plane, "endpoints"))
    # botocore would stop some of these on the client: send them as any client could, unchecked.
    raw = local_client(plane["workspace"], config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as caught:
        raw.create_endpoint_config(**body)
    assert caught.value.response["Error"]["Code"] == "ValidationException", case
    assert reason in caught.value.response["Error"]["Message"], caught.value.response["Error"]["Message"]
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert (names(plane, "models"), names(plane, "endpoint-configs"), names(plane, "endpoints")) == before


def test_unknown_endpoints_and_actions_are_answered_as_sagemaker_answers_them(plane: dict[str, Any]) -> None:
    with pytest.raises(ClientError) as caught:
        plane["client"].describe_endpoint(EndpointName="nowhere")
    assert caught.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": 'Could not find endpoint "arn:aws:sagemaker:us-east-1:000000000000:endpoint/nowhere".'}
    request = urllib.request.Request(plane["url"], data=b"{}", headers={
        "X-Amz-Target": "SageMaker.CreateTrainingJob", "Content-Type": "application/x-amz-json-1.1"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["__type"] == "UnknownOperationException"


def test_the_aws_cli_describes_and_lists_the_local_endpoints(plane: dict[str, Any]) -> None:
    deployer(plane).deploy(ENDPOINT, plane["v1"], "all_at_once")
    aws = Path(os.environ.get("VIRTUAL_ENV", Path(__file__).resolve().parents[2] / ".venv")) / "bin" / "aws"
    aws = aws if aws.exists() else Path(shutil.which("aws") or "aws")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    described = json.loads(subprocess.run(
        [str(aws), "sagemaker", "describe-endpoint", "--endpoint-name", ENDPOINT, "--endpoint-url", plane["url"]],
        capture_output=True, text=True, check=True, env=env, timeout=120).stdout)
    assert described["EndpointStatus"] == "InService" and described["ProductionVariants"][0]["VariantName"] == "v1"
    listed = json.loads(subprocess.run(
        [str(aws), "sagemaker", "list-endpoints", "--endpoint-url", plane["url"]],
        capture_output=True, text=True, check=True, env=env, timeout=120).stdout)
    assert [e["EndpointName"] for e in listed["Endpoints"]] == [ENDPOINT]


def test_genaiops_endpoints_and_the_aws_cli_list_the_same_endpoints_and_a_second_create_is_refused(
        plane: dict[str, Any], tiny_model_dir: Path) -> None:
    """One inventory: an endpoint made with `genaiops endpoints create` is the control plane's, listed alike by
    `aws sagemaker list-endpoints`; creating it again is refused as SageMaker refuses it, and changes nothing."""
    deployer(plane).deploy(ENDPOINT, plane["v1"], "all_at_once")
    genaiops = Path(os.environ.get("VIRTUAL_ENV", Path(__file__).resolve().parents[2] / ".venv")) / "bin" / "genaiops"
    env = {**os.environ, "GENAIOPS_WORKSPACE": str(plane["workspace"]), "COLUMNS": "200"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(genaiops), *args], capture_output=True, text=True, env=env, timeout=900,
                              check=False)

    made = cli("endpoints", "create", "by-hand", "--variant", f"main={tiny_model_dir}", "--max-batch-size", "2")
    assert made.returncode == 0, made.stderr
    try:
        listed = cli("endpoints", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        mine = sorted(e["name"] for e in json.loads(listed.stdout))
        aws = Path(genaiops).parent / "aws"
        aws_env = {**os.environ, "AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local",
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
                   "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
        theirs = json.loads(subprocess.run([str(aws), "sagemaker", "list-endpoints", "--endpoint-url", plane["url"]],
                                           capture_output=True, text=True, check=True, env=aws_env,
                                           timeout=120).stdout)
        assert mine == sorted(e["EndpointName"] for e in theirs["Endpoints"]) == sorted(["by-hand", ENDPOINT])
        invoked = cli("invoke", "by-hand", "--data", '{"inputs": "Ana: hi. Ben: hello."}')
        assert invoked.returncode == 0 and "variant: main" in invoked.stderr, invoked.stderr
        before = (names(plane, "models"), names(plane, "endpoint-configs"))
        again = cli("endpoints", "create", "by-hand", "--variant", f"other={tiny_model_dir}")
        assert again.returncode == 1
        assert 'Cannot create already existing endpoint "arn:aws:sagemaker:us-east-1:000000000000:endpoint/by-hand"' \
            in again.stderr
        assert (names(plane, "models"), names(plane, "endpoint-configs")) == before  # what it made went again
    finally:
        deleted = cli("endpoints", "delete", "by-hand")
    assert deleted.returncode == 0, deleted.stderr
    assert [e["EndpointName"] for e in plane["client"].list_endpoints()["Endpoints"]] == [ENDPOINT]


def test_sagemaker_runtime_reaches_every_endpoint_by_name_at_the_control_planes_url(plane: dict[str, Any]) -> None:
    deployer(plane).deploy(ENDPOINT, plane["v1"], "all_at_once")
    runtime = local_client(plane["workspace"], service="sagemaker-runtime")
    answer = runtime.invoke_endpoint(EndpointName=ENDPOINT, Body=BODY, ContentType="application/json",
                                     InferenceId="rec-1")
    assert answer["InvokedProductionVariant"] == "v1" and len(json.loads(answer["Body"].read())) == 1
    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint(EndpointName="nowhere", Body=BODY, ContentType="application/json")
    assert caught.value.response["Error"]["Code"] == "ValidationError"
    assert "Endpoint nowhere of account 000000000000 not found" in caught.value.response["Error"]["Message"]


def test_stopping_the_twin_stops_every_endpoint_process_and_starting_it_serves_them_again(plane: dict[str, Any]) -> None:
    """`genaiops sagemaker-api --stop` stops the control plane and every router and model server; a control plane
    started again finds the endpoint InService as it was and serves it."""
    from tests.servers import descendants

    deployer(plane).deploy(ENDPOINT, plane["v1"], "all_at_once")
    state = LocalEndpoints(plane["workspace"]).store.state(ENDPOINT)
    assert state is not None and state.host_pid
    pids = {state.host_pid, *descendants(state.host_pid)}
    server = json.loads((plane["workspace"] / "sagemaker" / "server.json").read_text())["pid"]
    genaiops = Path(os.environ.get("VIRTUAL_ENV", Path(__file__).resolve().parents[2] / ".venv")) / "bin" / "genaiops"
    stopped = subprocess.run([str(genaiops), "sagemaker-api", "--stop"], capture_output=True, text=True, timeout=600,
                             env={**os.environ, "GENAIOPS_WORKSPACE": str(plane["workspace"])}, check=False)
    assert stopped.returncode == 0, stopped.stderr
    with contextlib.suppress(ChildProcessError):  # this process started it (ensure): reap it
        os.waitpid(server, 0)
    assert not [pid for pid in {server, *pids} if running(pid)]  # the control plane, the router, the model server
    url = ensure(plane["workspace"])
    client = local_client(plane["workspace"])
    plane["client"], plane["url"] = client, url
    client.get_waiter("endpoint_in_service").wait(EndpointName=ENDPOINT, WaiterConfig={"Delay": 1, "MaxAttempts": 600})
    assert invoke(plane) == (200, "v1")
