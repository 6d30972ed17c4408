"""One variant of a local endpoint as the process that serves it: its model server (`serving.model_server`, as a
SageMaker container runs its server), health-checked over its channel, stopped on request; a shadow's runs at the
lowest CPU priority."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from local_aws.endpoint import VariantConfig
from serving.channel import Channel, new_address
from serving.handler import MAX_BODY_BYTES
from serving.yielding import Throttle

HEALTH_TIMEOUT_S = 600.0
SHADOW_CONNECTIONS = 64


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass
class Variant:
    """A running variant: its config, process and traffic counters."""

    config: VariantConfig
    port: int
    process: subprocess.Popen[bytes] | None = None
    status: str = "Creating"
    restarts: int = 0
    last_error: str = ""
    in_flight: int = 0
    started: float = field(default_factory=time.monotonic)
    throttle: Throttle | None = None  # a shadow's: stopped while production is busy
    address: str = field(init=False)
    channel: Channel = field(init=False)

    def __post_init__(self) -> None:
        self.address = new_address(self.config.name)
        # Shadows cap their connections: a hung shadow must not take one per mirrored request.
        self.channel = Channel(self.address, limit=SHADOW_CONNECTIONS if self.config.shadow else None,
                               max_body=MAX_BODY_BYTES)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self, folder: Path, timeout_s: float) -> None:
        """Start the variant's model server, as a SageMaker container runs its server (a shadow at idle priority)."""
        variant, config = self, self.config
        command = [sys.executable, "-m", "serving.model_server", "--model", config.model, "--port", str(variant.port),
                   "--channel", variant.address, "--timeout", str(timeout_s)]
        if config.max_batch_size:
            command += ["--max-batch-size", str(config.max_batch_size)]
        if config.threads:
            command += ["--threads", str(config.threads)]
        if variant.throttle is not None:
            command += ["--board", str(variant.throttle.board.path)]
        logfile = (folder / f"variant-{config.name}.log").open("ab")
        variant.process = subprocess.Popen(command, stdout=logfile, stderr=subprocess.STDOUT, env=os.environ.copy(),
                                           preexec_fn=_idle_priority if config.shadow else None)
        logfile.close()
        variant.started = time.monotonic()
        if variant.throttle is not None:
            variant.throttle.attach(variant.process.pid)

    async def healthy(self, folder: Path, timeout: float = HEALTH_TIMEOUT_S) -> bool:
        """Until the model server answers `/ping` (False, and why in `last_error`, when it exits or times out)."""
        variant = self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if variant.process is not None and variant.process.poll() is not None:
                variant.last_error = f"exited with code {variant.process.returncode} while starting; " \
                                     f"see {folder / f'variant-{variant.config.name}.log'}"
                return False
            try:
                if (await variant.channel.ping(timeout=2)).status == 200:
                    return True
            except (OSError, TimeoutError):  # not listening yet
                pass
            await asyncio.sleep(0.25)
        variant.last_error = f"no answer to /ping within {timeout:.0f} s"
        return False

    def stop_process(self) -> None:
        """Stop the variant's process (blocking; unthrottle it first, on the loop)."""
        variant = self
        process = variant.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)  # a stopped (hung) process cannot act on SIGTERM
                process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        throttle = variant.throttle
        if throttle is not None:
            throttle.board.close()
            throttle.board.path.unlink(missing_ok=True)
            variant.throttle = None



def _idle_priority() -> None:
    """A shadow runs only on CPU time production leaves idle (SCHED_IDLE; at least the lowest nice level)."""
    os.nice(19)
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

