"""The CDK app: `cdk synth` / `cdk deploy` (cdk.json runs `python -m infra_cdk.app`), checked by cdk-nag."""

from __future__ import annotations

import os

import aws_cdk as cdk
from aws_cdk import Validations
from cdk_nag import AwsSolutionsChecks

from infra_cdk.storage import StorageStack

# Feature flags live here rather than in cdk.json, so tests and `cdk synth` build the same app.
FEATURE_FLAGS = {
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,  # a bucket policy, not the legacy ACL
}


def build_app(*, stage: str | None = None, outdir: str | None = None) -> cdk.App:
    """All stacks of one stage (`-c stage=prod` on the CDK CLI; default dev); per-stage
    differences are keyword-only props set here."""
    app = cdk.App(outdir=outdir, context=FEATURE_FLAGS) if outdir else cdk.App(context=FEATURE_FLAGS)
    stage = stage or str(app.node.try_get_context("stage") or "dev")
    env = cdk.Environment(account=os.environ.get("CDK_DEFAULT_ACCOUNT"), region=os.environ.get("CDK_DEFAULT_REGION"))
    production = stage == "prod"
    StorageStack(app, f"genaiops-{stage}-storage", env=env, retain=production,
                 noncurrent_days=365 if production else 30,
                 description="genaiops shared storage: KMS key and artifact bucket")
    cdk.Tags.of(app).add("project", "genaiops")
    cdk.Tags.of(app).add("stage", stage)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def main() -> None:
    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    app = build_app()
    app.synth()


if __name__ == "__main__":
    main()
