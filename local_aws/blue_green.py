"""SageMaker's blue/green deployment over a local endpoint, with its guardrails.

The new endpoint config's fleet (green) starts beside the old one (blue) and takes no traffic until every variant
answers `/ping`; traffic then moves all at once, as a canary then the rest, or in linear steps, with
`WaitIntervalInSeconds` between steps and `TerminationWaitInSeconds` of baking at the end. The
`AutoRollbackConfiguration` alarms are watched throughout; one in `ALARM` (or passing
`MaximumExecutionTimeoutInSeconds`) sends all traffic back to blue and removes green. Requests in flight finish on
the fleet that took them, so no caller request is dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from local_aws.cloud import Cloud
from local_aws.endpoint import CaptureConfig, EndpointConfig, VariantConfig
from local_aws.endpoints import LocalEndpointError, LocalEndpoints
from local_aws.records import Records
from local_aws.sagemaker_api import timestamp, validation

log = logging.getLogger("local_aws.blue_green")

WATCH_INTERVAL_S = 1.0


class Stopping(Exception):  # noqa: N818 - a signal to the workers, not an error
    """The twin is stopping: an operation ends where it is, and the next start recovers it."""


class Shift:
    """A blue/green traffic shift: the green fleet's share at each step, the waits, the rollback alarms."""

    def __init__(self, steps: list[float], wait: float, bake: float, timeout: float | None, alarms: list[str]) -> None:
        self.steps, self.wait, self.bake, self.timeout, self.alarms = steps, wait, bake, timeout, alarms

    @classmethod
    def of(cls, deployment: dict[str, Any], instances: int) -> Shift:
        """The plan of a `DeploymentConfig`; none is SageMaker's default (all at once, no baking)."""
        if "RollingUpdatePolicy" in deployment:
            raise validation("RollingUpdatePolicy is not served by the local control plane; use BlueGreenUpdatePolicy.")
        alarms = [a["AlarmName"] for a in (deployment.get("AutoRollbackConfiguration") or {}).get("Alarms", [])]
        policy = deployment.get("BlueGreenUpdatePolicy")
        if policy is None:
            return cls([1.0], 0.0, 0.0, None, alarms)
        routing = policy["TrafficRoutingConfiguration"]
        kind, wait = routing["Type"], float(routing["WaitIntervalInSeconds"])
        bake = float(policy.get("TerminationWaitInSeconds", 0))
        timeout = float(policy["MaximumExecutionTimeoutInSeconds"]) if "MaximumExecutionTimeoutInSeconds" in policy \
            else None
        if kind == "ALL_AT_ONCE":
            return cls([1.0], wait, bake, timeout, alarms)
        size_key = "CanarySize" if kind == "CANARY" else "LinearStepSize"
        size = routing.get(size_key)
        if size is None:
            raise validation(f"TrafficRoutingConfiguration of type {kind} requires {size_key}.")
        # An instance count is a share of the new fleet's instances (locally, traffic moves by that share).
        if size["Type"] == "CAPACITY_PERCENT":
            fraction = float(size["Value"]) / 100.0
        else:
            fraction = min(1.0, float(size["Value"]) / max(1, instances))
        if kind == "CANARY":
            if not 0 < fraction <= 0.5:
                raise validation(f"CanarySize must be more than 0 and at most 50% of the new fleet's capacity; got "
                                 f"{size['Value']} {size['Type']}.")
            return cls([fraction, 1.0], wait, bake, timeout, alarms)
        if not 0.1 <= fraction <= 0.5:
            raise validation(f"LinearStepSize must be between 10% and 50% of the new fleet's capacity; got "
                             f"{size['Value']} {size['Type']}.")
        steps, share = [], 0.0
        while share < 1.0 - 1e-9:
            share = min(1.0, share + fraction)
            steps.append(round(share, 6))
        return cls(steps, wait, bake, timeout, alarms)


class BlueGreen:
    """Carries out one update of an endpoint to a new config, and ends it in the endpoint's record."""

    def __init__(self, records: Records, endpoints: LocalEndpoints, cloud: Cloud,
                 capture: Callable[[dict[str, Any]], CaptureConfig], stopping: Callable[[], None]) -> None:
        self.records, self.endpoints, self.cloud, self.capture = records, endpoints, cloud, capture
        self.stopping = stopping  # raises Stopping once the twin stops

    def run(self, name: str, blue: str, config: dict[str, Any], green: list[VariantConfig], plan: Shift,
            deployment: dict[str, Any]) -> None:
        started = time.monotonic()
        current = self.endpoints.store.config(name)
        fleet = config["EndpointConfigName"]
        both = current.model_copy(update={"variants": [*current.variants, *green],
                                          "fleet_shares": {blue: 1.0, fleet: 0.0}})
        try:
            self.endpoints.update(EndpointConfig.model_validate(both.model_dump()))
        except LocalEndpointError as exc:  # the new fleet never took traffic
            self.stopping()
            self.finish(name, blue, failure=f"The new fleet of {fleet} failed to start: {exc}")
            return
        try:
            reason = None
            for share in plan.steps:  # each step bakes for WaitIntervalInSeconds, watched by the rollback alarms
                self._pending_status(name, "ActivatingTraffic")
                self._shares(name, current, green, {blue: 1.0 - share, fleet: share})
                self._pending_status(name, "Baking")
                reason = self._watch(plan, plan.wait, started)
                if reason:
                    break
            if reason is None:  # then TerminationWaitInSeconds before the old fleet goes, still watched
                reason = self._watch(plan, plan.bake, started)
        except Stopping:
            raise
        except Exception as exc:  # a failure half-way is rolled back as an alarm would be
            log.exception("endpoint %s: the update to %s failed", name, fleet)
            reason = f"the update failed: {type(exc).__name__}: {exc}"
        if reason:
            self.records.update("endpoints", name, EndpointStatus="RollingBack")
            try:
                self._shares(name, current, [], {})  # all traffic back to the old fleet; the new one drains, stops
            except Exception as exc:
                self.stopping()
                self.records.update("endpoints", name, EndpointStatus="UpdateRollbackFailed",
                                    PendingDeploymentSummary=None,
                                    FailureReason=f"The update to {fleet} failed ({reason}) and so did its rollback: "
                                                  f"{exc}"[:1024])
                return
            self.finish(name, blue, failure=f"The update to {fleet} was rolled back: {reason}")
            return
        self._shares(name, current.model_copy(update={"variants": []}), green, {})  # the old fleet drains and stops
        self.finish(name, fleet, deployment=deployment, capture=self.capture(config))

    def _shares(self, name: str, blue: EndpointConfig, green: list[VariantConfig], shares: dict[str, float]) -> None:
        live = self.endpoints.store.config(name)
        variants = [*blue.variants, *green]
        desired = live.model_copy(update={"variants": variants, "fleet_shares": shares if len(
            {v.fleet for v in variants}) > 1 else {}})
        self.endpoints.update(EndpointConfig.model_validate(desired.model_dump()))

    def _watch(self, plan: Shift, seconds: float, started: float) -> str | None:
        """Wait `seconds`, watching the rollback alarms; the reason to roll back, or None."""
        deadline = time.monotonic() + seconds
        while True:
            self.stopping()
            for alarm, (state, why) in self.cloud.alarm_states(plan.alarms).items() if plan.alarms else ():
                if state == "ALARM":
                    return f"alarm {alarm} is in ALARM ({why})"
            if plan.timeout and time.monotonic() - started > plan.timeout:
                return f"the deployment took longer than MaximumExecutionTimeoutInSeconds ({plan.timeout:.0f} s)"
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(WATCH_INTERVAL_S, left))

    def finish(self, name: str, config_name: str, *, failure: str | None = None,
               deployment: dict[str, Any] | None = None, capture: CaptureConfig | None = None) -> None:
        """The update's end: the endpoint InService on `config_name`, with SageMaker's record of how it ended."""
        if capture is not None:
            live = self.endpoints.store.config(name)
            if live.capture != capture:
                self.endpoints.update(live.model_copy(update={"capture": capture}))
        changes: dict[str, Any] = {"EndpointStatus": "InService", "EndpointConfigName": config_name,
                                   "LastModifiedTime": timestamp(), "PendingDeploymentSummary": None,
                                   "_deployment": None, "FailureReason": failure[:1024] if failure else None}
        if failure is None:
            changes["_weights"] = None
            if deployment:
                changes["LastDeploymentConfig"] = deployment
        else:
            log.warning("endpoint %s: %s", name, failure)
        self.records.update("endpoints", name, **changes)

    def _pending_status(self, name: str, status: str) -> None:
        with self.records.lock:
            record = self.records.read("endpoints", name)
            pending = (record or {}).get("PendingDeploymentSummary")
            if record is None or not pending:
                return
            for variant in pending.get("ProductionVariants", []):
                variant["VariantStatus"] = [{"Status": status, "StartTime": timestamp()}]
            self.records.write("endpoints", name, record)
