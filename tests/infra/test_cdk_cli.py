"""The CDK CLI pinned in package.json runs offline from the repository root: `cdk ls` lists every stack, `cdk synth`
writes every template, and a bad context value fails with one readable line. Any network call would fail: the
proxies point at a closed port."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CDK = ROOT / "node_modules" / ".bin" / "cdk"
STACKS = [f"genaiops-dev-{s}" for s in ("network", "data", "approvals", "registry", "monitoring", "serving", "orchestration")]

def _cdk(*args: str) -> subprocess.CompletedProcess[str]:
    assert CDK.exists(), "the pinned CDK CLI is not installed: run `npm ci` (`make test` and `make synth` do)"
    env = {**os.environ, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "CDK_DISABLE_VERSION_CHECK": "1", "CDK_DISABLE_CLI_TELEMETRY": "true",
           "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20"}
    env.pop("CDK_DEFAULT_ACCOUNT", None)
    return subprocess.run([str(CDK), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_cdk_ls_and_synth_run_offline(tmp_path: Path) -> None:
    listed = _cdk("ls")
    assert listed.returncode == 0, listed.stderr[-3000:]
    assert listed.stdout.split() == STACKS
    out = tmp_path / "cdk.out"
    synthesized = _cdk("synth", "--quiet", "-c", "stage=prod", "-o", str(out))
    assert synthesized.returncode == 0, synthesized.stderr[-3000:]
    templates = sorted(p.name for p in out.glob("*.template.json"))
    assert templates == sorted(f"{s.replace('-dev-', '-prod-')}.template.json" for s in STACKS)
    reports = json.loads((out / "validation-report.json").read_text())["pluginReports"]
    assert all(r["violations"] == [] for r in reports), reports  # cdk-nag answered; the CLI's own check passed


def test_a_bad_context_value_fails_in_one_line(tmp_path: Path) -> None:
    bad = _cdk("synth", "--quiet", "-o", str(tmp_path), "-c",
               'endpoints=[{"name": "summarizer", "model": "dialogue-summarizer", "production": 0}]')
    assert bad.returncode != 0
    assert "genaiops infra: -c endpoints:" in bad.stderr and "production" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert not list(tmp_path.glob("*.template.json"))
