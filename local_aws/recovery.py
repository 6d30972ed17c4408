"""What the twin does when it stops and when it starts again: every endpoint's processes stopped (records and
configs kept), then every endpoint served as SageMaker would find it."""

from __future__ import annotations

import functools
from typing import Any

from local_aws.endpoint_api import ACTIVE, Endpoints
from local_aws.endpoints import LocalEndpointError


class Recovery:
    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.records, self.local, self.workers = endpoints.records, endpoints.local, endpoints.workers
        self.blue_green = endpoints.blue_green

    def stop_all(self) -> list[str]:
        """Stop every endpoint's processes (their records and configs stay): what the twin does when it stops."""
        self.workers.stopping.set()
        stopped = []
        for name in self.local.store.names():
            if self.local.running(name):
                self.local.stop(name)
                stopped.append(name)
        self.workers.wait_idle(timeout=60)
        return stopped

    def recover(self) -> list[str]:
        """After a start: serve every endpoint as SageMaker would find it. An InService endpoint whose processes do
        not run is started again (SystemUpdating meanwhile); an update cut short is rolled back to the endpoint's
        config; a creation ends InService or Failed as the local endpoint stands; a deletion is finished."""
        recovered = []
        for name in self.records.names("endpoints"):
            record = self.records.read("endpoints", name) or {}
            status = record.get("EndpointStatus")
            if self.workers.busy(name):
                continue
            exists = name in self.local.store.names()
            running = exists and self.local.running(name)
            if status == "Deleting":
                self.endpoints.delete(name, record["EndpointArn"])
            elif status in ("Updating", "RollingBack") and exists:
                self._roll_back(name, record, running)
            elif status == "InService" and exists and not running:
                self.records.update("endpoints", name, EndpointStatus="SystemUpdating")
                self.workers.start(name, functools.partial(self._serve_again, name, "InService", None))
            elif status in ACTIVE and running and self.local.describe(name).status == "InService":
                self.records.update("endpoints", name, EndpointStatus="InService", PendingDeploymentSummary=None)
            elif status in ACTIVE:
                self.records.update("endpoints", name, EndpointStatus="Failed", PendingDeploymentSummary=None,
                                    FailureReason=f"The control plane stopped while the endpoint was {status}.")
            else:
                continue
            recovered.append(name)
        return recovered

    def _roll_back(self, name: str, record: dict[str, Any], running: bool) -> None:
        """An update the control plane did not see to its end: back to the endpoint's config, unless the new one
        was all that was left (the update had finished but for its record)."""
        current = self.local.store.config(name)
        pending = (record.get("PendingDeploymentSummary") or {}).get("EndpointConfigName")
        if pending and {v.fleet for v in current.variants} == {pending} and record["EndpointStatus"] == "Updating":
            serving, failure, deployment = pending, None, record.get("_deployment") or None
        else:
            serving, deployment = record["EndpointConfigName"], None
            failure = "The control plane stopped during the update; it was rolled back."
            keep = [v for v in current.variants if v.fleet == serving]
            if keep and len(keep) != len(current.variants):
                trimmed = current.model_copy(update={"variants": keep, "fleet_shares": {}})
                if running:
                    self.local.update(trimmed)
                else:
                    self.local.store.write_config(trimmed)
        if running:
            self.blue_green.finish(name, serving, failure=failure, deployment=deployment)
        else:
            self.records.update("endpoints", name, EndpointStatus="SystemUpdating")
            self.workers.start(name, lambda: self._serve_again(name, serving, failure, deployment))

    def _serve_again(self, name: str, serving: str, failure: str | None,
                     deployment: dict[str, Any] | None = None) -> None:
        try:
            self.local.start(name)
        except LocalEndpointError as exc:
            self.workers.check()
            self.records.update("endpoints", name, EndpointStatus="Failed", PendingDeploymentSummary=None,
                                FailureReason=f"The endpoint did not start again: {exc}"[:1024])
            return
        if serving == "InService":
            self.records.update("endpoints", name, EndpointStatus="InService")
        else:
            self.blue_green.finish(name, serving, failure=failure, deployment=deployment)
