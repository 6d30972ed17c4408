"""The supervisor of one local endpoint: its variant processes, their fleets, and the state other shells read.

It starts a process per variant (`serving.model_server`), health-checks it before it gets traffic,
restarts one that crashes (and records it), and applies a changed config while serving
(`reload`): new variants and fleets start before they get traffic, removed ones drain first.
Which variants are in service, and each fleet's share of the traffic, is the route table that
the request path (`local_aws.router`) reads; this module knows nothing of requests.

A blue/green deployment runs two fleets (two SageMaker endpoint configs) side by side: each
variant belongs to one, and `EndpointConfig.fleet_shares` splits the traffic between them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_aws.endpoint import EndpointConfig, EndpointState, EndpointStore, VariantConfig, VariantState, now
from local_aws.variant import Variant, free_port
from serving.yielding import Board, Throttle

log = logging.getLogger("local_aws.supervisor")

MAX_EVENTS = 50


@dataclass(frozen=True)
class Route:
    """One fleet's production variants in service, their weights, and the fleet's share of the traffic."""

    fleet: str
    share: float
    variants: list[Variant]
    weights: list[float]


class Supervisor:
    """The variant processes of one local endpoint, its route table and its published state."""

    def __init__(self, folder: Path, store: EndpointStore, *, capture: str = "", metrics: str = "") -> None:
        self.folder, self.store = folder, store
        self.config: EndpointConfig = store.config(folder.name)
        self.name = self.config.name
        self.variants: dict[str, Variant] = {}  # by VariantConfig.key
        self.routes: list[Route] = []
        self.status = "Creating"
        self.failure_reason = ""
        self.events: list[str] = []
        self.created = now()
        self.url = ""
        self.capture_path, self.metrics_path = capture, metrics
        self._throttles: list[Throttle] = []
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- state ---------------------------------------------------------------------------

    def event(self, text: str) -> None:
        line = f"{now()} {text}"
        log.info("%s: %s", self.name, text)
        self.events = [*self.events, line][-MAX_EVENTS:]
        self.publish()

    def publish(self) -> None:
        variants = [VariantState(name=v.config.name, fleet=v.config.fleet, status=v.status, shadow=v.config.shadow,
                                 weight=v.config.weight, model=v.config.model, url=v.url,
                                 pid=v.process.pid if v.process else None, restarts=v.restarts,
                                 last_error=v.last_error) for v in self.variants.values()]
        self.store.write_state(EndpointState(
            name=self.name, status=self.status, url=self.url, host_pid=os.getpid(),
            variants=variants, capture=self.capture_path, metrics=self.metrics_path,
            failure_reason=self.failure_reason, created=self.created, updated=now(), events=self.events))

    def _route_table(self) -> None:
        """Per fleet, the production variants in service and their weights (an atomic swap for requests).

        A fleet with nothing in service yet gets no traffic: its share goes to the others."""
        routes = []
        for fleet in self.config.fleets:
            ready = [v for v in self.variants.values()
                     if v.config.fleet == fleet and not v.config.shadow and v.status == "InService"]
            if ready:
                share = self.config.fleet_shares.get(fleet, 1.0) if self.config.fleet_shares else 1.0
                routes.append(Route(fleet, share, ready, [v.config.weight for v in ready]))
        self.routes = routes

    @property
    def production(self) -> list[Variant]:
        return [v for route in self.routes for v in route.variants]

    def throttles(self) -> list[Throttle]:
        return self._throttles

    # --- processes -----------------------------------------------------------------------

    async def _start_variant(self, config: VariantConfig) -> Variant:
        variant = Variant(config=config, port=free_port())
        if config.shadow:
            variant.throttle = Throttle(Board(self.folder / f"variant-{config.name}.board", create=True),
                                        share=config.share_while_busy)
            self._throttles = [*self._throttles, variant.throttle]
        self.variants[config.key] = variant
        variant.spawn(self.folder, self.config.timeout_s)
        self.publish()
        if await variant.healthy(self.folder):
            variant.status = "InService"
        else:
            variant.status = "Failed"
        self._route_table()
        self.publish()
        return variant

    def _unthrottle(self, variant: Variant) -> None:
        """On the loop, before a shadow's process is stopped for good: no more holds, and it runs to act on SIGTERM."""
        throttle = variant.throttle
        if throttle is not None:
            self._throttles = [t for t in self._throttles if t is not throttle]
            throttle.close()

    async def _retire(self, variant: Variant) -> None:
        self._unthrottle(variant)
        await asyncio.get_running_loop().run_in_executor(None, variant.stop_process)

    async def start(self) -> None:
        self.publish()
        started = await asyncio.gather(*(self._start_variant(v) for v in self.config.variants))
        failed = [v for v in started if v.status == "Failed"]
        if failed:
            self.status = "Failed"
            self.failure_reason = "; ".join(f"variant {v.config.name}: {v.last_error}" for v in failed)
            self.event(f"creation failed: {self.failure_reason}")
            return
        self.status = "InService"
        self.event(f"in service at {self.url} with {', '.join(self.variants)}")
        self._spawn_task(self._supervise())

    async def stop(self) -> None:
        self.status = "Deleting"
        for task in list(self._tasks):  # first the supervisor, or it would restart what is being stopped
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for variant in self.variants.values():
            variant.status = "Draining"
        self.publish()
        for variant in self.variants.values():
            self._unthrottle(variant)
            variant.stop_process()
        for variant in self.variants.values():
            variant.channel.close()

    def _spawn_task(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _supervise(self) -> None:
        """Restart a variant whose process died, and say so in the state and the events."""
        while True:
            await asyncio.sleep(0.5)
            for variant in list(self.variants.values()):
                process = variant.process
                if variant.status != "InService" or process is None or process.poll() is None:
                    continue
                variant.restarts += 1
                variant.status = "Restarting"
                variant.last_error = f"process exited with code {process.returncode}"
                self._route_table()
                self.event(f"variant {variant.config.name} crashed ({variant.last_error}); restart {variant.restarts}")
                self._spawn_task(self._restart(variant))  # the others stay watched meanwhile

    async def _restart(self, variant: Variant) -> None:
        variant.spawn(self.folder, self.config.timeout_s)
        if await variant.healthy(self.folder):
            variant.status = "InService"
            self.event(f"variant {variant.config.name} back in service")
        else:
            variant.status = "Failed"
            self.event(f"variant {variant.config.name} failed to restart: {variant.last_error}")
        self._route_table()
        self.publish()

    async def reload(self) -> dict[str, Any]:
        """Apply config.json while serving: new variants start before they get traffic, removed ones drain."""
        async with self._lock:
            desired = self.store.config(self.name)
            self.status = "Updating"
            self.publish()
            added = [v for v in desired.variants if v.key not in self.variants]
            removed = [self.variants[k] for k in self.variants if k not in {v.key for v in desired.variants}]
            replaced = [v.key for v in desired.variants
                        if v.key in self.variants and self.variants[v.key].config.model != v.model]
            if replaced:
                self.status = "InService"
                self.publish()
                raise ValueError(f"variant(s) {replaced} changed model: add a new variant and remove the old one instead")
            new = await asyncio.gather(*(self._start_variant(v) for v in added))
            failed = [v for v in new if v.status == "Failed"]
            if failed:  # no new variant takes traffic when one cannot start, and nothing else changes
                for variant in new:
                    self.variants.pop(variant.config.key, None)
                    await self._retire(variant)
                self.status = "InService"
                self._route_table()
                self.event(f"update refused: {[v.config.name for v in failed]} failed to start")
                raise RuntimeError("; ".join(f"variant {v.config.name}: {v.last_error}" for v in failed))
            for config in desired.variants:  # weights, sampling and a shadow's share change in place
                self.variants[config.key].config = config
                throttle = self.variants[config.key].throttle
                if throttle is not None:
                    throttle.share = config.share_while_busy
            for variant in removed:
                variant.status = "Draining"
            self.config = desired
            self._route_table()
            self.publish()
            for variant in removed:  # requests already sent to it finish first; the loop keeps serving
                deadline = time.monotonic() + self.config.timeout_s
                while variant.in_flight and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                await self._retire(variant)
                self.variants.pop(variant.config.key, None)
            self.status = "InService"
            summary = ", ".join(f"{v.config.key}={v.config.weight:g}" for v in self.production)
            shares = ", ".join(f"{f}={s:g}" for f, s in desired.fleet_shares.items())
            self.event(f"updated: weights {summary}" + (f"; fleet shares {shares}" if shares else "")
                       + (f"; added {[v.key for v in added]}" if added else "")
                       + (f"; removed {[v.config.key for v in removed]}" if removed else ""))
            return {"status": self.status, "variants": list(self.variants)}
