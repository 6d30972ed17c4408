"""The offline guard catches what it should, and the CLI stays inside loopback under it."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.offline import BIN, refused, run_guarded


def test_guard_refuses_and_records_a_connection_outside_loopback(tmp_path: Path) -> None:
    log = tmp_path / "net.log"
    code = (
        "import socket\n"
        "try:\n    socket.create_connection(('192.0.2.1', 80), timeout=1)\nexcept OSError as e:\n    print(e)\n"
        "try:\n    socket.getaddrinfo('pypi.org', 443)\nexcept OSError as e:\n    print(e)\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
        "socket.create_connection(s.getsockname(), timeout=1).close()\n"
    )
    result = run_guarded([sys.executable, "-c", code], log)
    assert result.returncode == 0, result.stderr
    assert "offline guard" in result.stdout
    lines = refused(log)
    assert len(lines) == 2
    assert "192.0.2.1" in lines[0] and "pypi.org" in lines[1]


def test_cli_commands_make_no_connection_outside_loopback(
    tmp_path: Path, sample_jsonl: Path, tiny_model_dir: Path
) -> None:
    log = tmp_path / "net.log"
    env = {"GENAIOPS_WORKSPACE": str(tmp_path / "ws")}
    config = tmp_path / "tiny.yaml"
    config.write_text(f"finetune: {{base_model: {tiny_model_dir}}}\n")
    validate = ["data", "validate", str(sample_jsonl), "--config", str(config)]
    for args in (["--help"], ["config", "show"], ["config", "schema"], validate):
        result = run_guarded([str(BIN / "genaiops"), *args], log, **env)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert refused(log) == []
