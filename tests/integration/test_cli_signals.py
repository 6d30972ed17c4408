"""A command that runs flows stops everything it started on SIGTERM, as on Ctrl-C (Prefect's temporary API
server is a child process of the first flow run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import descendants, running, stop


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_the_approval_watcher_leaves_nothing_running(isolated_env: Path, tmp_path: Path, signum: signal.Signals) -> None:
    log = tmp_path / "watch.log"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    with log.open("wb") as out:
        process = subprocess.Popen([str(Path(sys.executable).parent / "genaiops"), "approvals", "watch", "--interval", "1"],
                                   stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "Finished in state Completed" not in log.read_text(errors="replace"):  # a flow run is under way
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.2)
        started = descendants(process.pid)
        assert any("prefect" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                   for pid in started if running(pid))  # the temporary Prefect server it started
        process.send_signal(signum)
        process.wait(timeout=120)
        left = sorted(pid for pid in started if running(pid))
        assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in left]
    finally:
        stop(process)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sagemaker_api_prints_its_url_serves_boto3_and_stops_cleanly(isolated_env: Path, tmp_path: Path,
                                                                      signum: signal.Signals) -> None:
    import re

    import boto3

    genaiops = str(Path(sys.executable).parent / "genaiops")
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen([genaiops, "sagemaker-api"], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"on (http://127\.0\.0\.1:\d+)", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        url = found.group(1)
        client = boto3.client("sagemaker", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x",
                              aws_secret_access_key="x")
        assert client.list_endpoints()["Endpoints"] == []
        second = subprocess.run([genaiops, "sagemaker-api"], capture_output=True, text=True, timeout=120)
        assert second.returncode != 0 and "already runs" in second.stderr, second.stderr  # one per workspace
        process.send_signal(signum)
        assert process.wait(timeout=60) == 0
        assert not (isolated_env / "sagemaker" / "server.json").exists()
    finally:
        stop(process)
