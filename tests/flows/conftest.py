from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """Flows run against a throwaway Prefect server and database for the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def workspace(isolated_env: Path) -> Iterator[Path]:
    """The test's workspace; its local endpoints and SageMaker control plane are stopped afterwards."""
    from pipelines.settings import load_settings
    from serving.control_plane import stop_running
    from serving.local import LocalEndpoints

    root = load_settings().root
    try:
        yield root
    finally:
        for name in LocalEndpoints(root).store.names():
            LocalEndpoints(root).delete(name)
        stop_running(root)
