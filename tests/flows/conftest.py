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
    from local_aws.server import stop
    from pipelines.settings import load_settings

    root = load_settings().root
    try:
        yield root
    finally:
        stop(root)


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """One moto server for the session (S3, IAM, STS, KMS, CloudWatch, SNS, SQS, SageMaker's training jobs) on
    127.0.0.1: clients that cache their endpoint (MLflow's S3 client) keep reaching it. Tests reset it."""
    from moto.server import ThreadedMotoServer

    from tests.servers import free_port

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        moto.stop()
