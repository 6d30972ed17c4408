"""The CDK app synthesizes offline, passes cdk-nag's AwsSolutions pack and encrypts what it stores."""

from __future__ import annotations

from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import Validations
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from infra_cdk.app import build_app
from infra_cdk.storage import StorageStack


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    app = build_app(stage="dev", outdir=str(tmp_path_factory.mktemp("cdk.out")))
    app.synth()  # raises if any cdk-nag finding is not acknowledged
    stack = next(c for c in app.node.children if isinstance(c, StorageStack))
    return Template.from_stack(stack)


def test_artifact_bucket_is_kms_encrypted_versioned_private_and_logged(template: Template) -> None:
    template.has_resource_properties("AWS::S3::Bucket", {
        "BucketEncryption": {"ServerSideEncryptionConfiguration": [Match.object_like({
            "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": Match.any_value()},
            "BucketKeyEnabled": True,
        })]},
        "VersioningConfiguration": {"Status": "Enabled"},
        "PublicAccessBlockConfiguration": {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                           "IgnorePublicAcls": True, "RestrictPublicBuckets": True},
        "LoggingConfiguration": Match.object_like({"LogFilePrefix": "artifacts/"}),
    })
    template.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})


def test_buckets_refuse_plain_http(template: Template) -> None:
    policies = template.find_resources("AWS::S3::BucketPolicy")
    assert len(policies) == 2
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
                   for s in statements)


def test_outputs_name_the_settings_they_feed(template: Template) -> None:
    outputs = template.find_outputs("*")
    assert {o["Description"] for o in outputs.values()} == {"GENAIOPS_ARTIFACT_BUCKET", "GENAIOPS_KMS_KEY_ID"}


def test_dev_is_disposable_and_prod_is_retained(tmp_path: Path) -> None:
    prod = build_app(stage="prod", outdir=str(tmp_path))
    stack = next(c for c in prod.node.children if isinstance(c, StorageStack))
    Template.from_stack(stack).has_resource("AWS::KMS::Key", {"DeletionPolicy": "Retain"})


def test_cdk_nag_stops_synth_on_an_unacknowledged_finding(tmp_path: Path) -> None:
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Insecure")
    s3.Bucket(stack, "Plain")  # no TLS enforcement, no access logs
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(Exception, match=r"AwsSolutions-S(1|10)"):
        app.synth()


def test_synthesized_templates_pass_cfn_lint(tmp_path: Path) -> None:
    import json

    from cfnlint.api import lint_all

    out = tmp_path / "cdk.out"
    build_app(stage="prod", outdir=str(out)).synth()
    templates = sorted(out.glob("*.template.json"))
    assert templates
    for path in templates:
        findings = [m for m in lint_all(path.read_text()) if m.rule.id[0] in "EW"]
        assert findings == [], (path.name, [str(m) for m in findings], json.loads(path.read_text()).keys())
