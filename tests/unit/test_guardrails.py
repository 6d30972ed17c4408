"""Blue/green traffic-shifting plans from SageMaker's DeploymentConfig, as the local control plane runs them."""

from __future__ import annotations

import pytest

from local_aws.blue_green import Shift
from local_aws.sagemaker_api import ApiError


def policy(kind: str, size: dict[str, object] | None = None, **extra: object) -> dict[str, object]:
    routing: dict[str, object] = {"Type": kind, "WaitIntervalInSeconds": 60}
    if size is not None:
        routing["CanarySize" if kind == "CANARY" else "LinearStepSize"] = size
    return {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing, "TerminationWaitInSeconds": 120, **extra},
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "e/errors"}]}}


def test_each_traffic_routing_type_gives_its_steps_waits_and_alarms() -> None:
    default = Shift.of({}, instances=1)
    assert (default.steps, default.wait, default.bake, default.timeout, default.alarms) == ([1.0], 0, 0, None, [])
    canary = Shift.of(policy("CANARY", {"Type": "CAPACITY_PERCENT", "Value": 10},
                             MaximumExecutionTimeoutInSeconds=900), instances=1)
    assert (canary.steps, canary.wait, canary.bake, canary.timeout, canary.alarms) == (
        [0.1, 1.0], 60, 120, 900, ["e/errors"])
    assert Shift.of(policy("CANARY", {"Type": "INSTANCE_COUNT", "Value": 1}), instances=4).steps == [0.25, 1.0]
    assert Shift.of(policy("LINEAR", {"Type": "CAPACITY_PERCENT", "Value": 30}), instances=1).steps == [
        0.3, 0.6, 0.9, 1.0]
    assert Shift.of(policy("LINEAR", {"Type": "INSTANCE_COUNT", "Value": 1}), instances=2).steps == [0.5, 1.0]
    assert Shift.of(policy("ALL_AT_ONCE"), instances=1).steps == [1.0]


@pytest.mark.parametrize(("deployment", "reason"), [
    (policy("CANARY"), "requires CanarySize"),
    (policy("CANARY", {"Type": "CAPACITY_PERCENT", "Value": 60}), "at most 50%"),
    (policy("CANARY", {"Type": "INSTANCE_COUNT", "Value": 2}), "at most 50%"),  # 2 of 2 instances
    (policy("LINEAR", {"Type": "CAPACITY_PERCENT", "Value": 5}), "between 10% and 50%"),
    ({"RollingUpdatePolicy": {}}, "RollingUpdatePolicy is not served"),
])
def test_plans_sagemaker_refuses_are_refused_with_a_validation_exception(deployment: dict[str, object],
                                                                         reason: str) -> None:
    with pytest.raises(ApiError) as refused:
        Shift.of(deployment, instances=2)
    assert refused.value.code == "ValidationException" and reason in refused.value.message
