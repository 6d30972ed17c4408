"""The control plane's workers: one thread per endpoint operation (a creation, a blue/green update, a restart), so
that SageMaker's API answers at once and the operation's end shows in DescribeEndpoint."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from local_aws.blue_green import Stopping
from local_aws.records import Records

log = logging.getLogger("local_aws.workers")


class Workers:
    def __init__(self, records: Records) -> None:
        self.records = records
        self._threads: dict[str, threading.Thread] = {}
        self.stopping = threading.Event()

    def check(self) -> None:
        """Raise `Stopping` once the twin stops: an operation ends where it is, and the next start recovers it."""
        if self.stopping.is_set():
            raise Stopping

    def busy(self, name: str) -> bool:
        return name in self._threads

    def start(self, name: str, work: Callable[[], None]) -> None:
        def run() -> None:
            try:
                work()
            except Stopping:
                log.info("endpoint %s: operation left to the next start", name)
            except Exception as exc:  # a bug must still leave the endpoint in a state SageMaker knows
                log.exception("endpoint %s: the operation failed", name)
                self.records.update("endpoints", name, EndpointStatus="Failed",
                                    FailureReason=f"{type(exc).__name__}: {exc}"[:1024])
            finally:
                self._threads.pop(name, None)

        thread = threading.Thread(target=run, name=f"endpoint-{name}", daemon=True)
        self._threads[name] = thread
        thread.start()

    def wait_idle(self, timeout: float | None = None) -> None:
        """Until no operation runs (at most `timeout` seconds each)."""
        for thread in list(self._threads.values()):
            thread.join(timeout)
