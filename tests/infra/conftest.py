"""The CDK app synthesized once per stage for the infra tests (synthesis runs cdk-nag: a finding fails it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from infra_cdk.app import build_app

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

# An endpoint kept as code with a shadow variant on a local-storage instance type, and one without on an EBS type.
ENDPOINTS = [{"name": "summarizer-pinned", "model": "dialogue-summarizer", "production": 3, "shadow": 4},
             {"name": "summarizer-small", "model": "dialogue-summarizer", "production": 3,
              "instance_type": "ml.m5.xlarge"}]


PREFECT_API = "https://prefect.example.org/api"


class Synth:
    def __init__(self, app: cdk.App, outdir: Path, stage: str) -> None:
        self.app, self.outdir, self.stage = app, outdir, stage

    def stack(self, lifecycle: str) -> cdk.Stack:
        return next(c for c in self.app.node.children
                    if isinstance(c, cdk.Stack) and c.stack_name == f"genaiops-{self.stage}-{lifecycle}")

    def template(self, lifecycle: str) -> Template:
        return Template.from_stack(self.stack(lifecycle))

    def json(self, lifecycle: str) -> dict[str, Any]:
        return dict(self.template(lifecycle).to_json())


def synth(outdir: Path, stage: str, **context: Any) -> Synth:
    app = build_app(stage=stage, outdir=str(outdir), context=context)
    app.synth()  # raises if any cdk-nag finding is not acknowledged
    return Synth(app, outdir, stage)


@pytest.fixture(scope="session")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synth(tmp_path_factory.mktemp("cdk-dev"), "dev", endpoints=ENDPOINTS, prefect_api_url=PREFECT_API)


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """prod with its region given, as `cdk deploy` gives it (dev stays environment-agnostic)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CDK_DEFAULT_REGION", "eu-west-1")
        return synth(tmp_path_factory.mktemp("cdk-prod"), "prod", endpoints=ENDPOINTS[:1])
