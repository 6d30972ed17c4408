"""The checks on the CDK app: cdk-nag's packs with every acknowledgement reasoned, cfn-lint on every template, and
proof that the checks can fail when a protection is taken away."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import Validations
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks

from infra_cdk.app import build_app
from infra_cdk.constructs.nag import acknowledge
from tests.infra.conftest import ENDPOINTS, Synth
from tests.infra.test_stacks import approvers_may_only_change_approval_status

# cfn-lint's W3005 (a DependsOn that a Ref already implies) fires on the custom resource providers CDK itself
# writes (bucket auto-delete, the default security group's restriction); nothing of genaiops' own.
# The regions the platform deploys to: SageMaker's managed MLflow and AWS Budgets are in both (cfn-lint would
# otherwise check every region, some of which have neither).
REGIONS = ["us-east-1", "eu-west-1"]
# W3010 (hard-coded availability zones) fires on the network stack when its region is known: it names the zones
# <region>a, b and c itself, which every account has, so that `cdk deploy` makes no context lookup.
CDK_PROVIDERS = ("CustomS3AutoDeleteObjectsCustomResourceProvider", "CustomVpcRestrictDefaultSGCustomResourceProvider")


def test_synthesis_runs_every_pack_and_each_acknowledgement_has_a_reason(dev: Synth) -> None:
    acknowledged: dict[str, str] = {}
    for construct in dev.app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for rule, reason in dict(entry.data).items():
                    acknowledged[f"{construct.node.path} {rule}"] = str(reason)
    assert acknowledged
    assert all(len(reason.strip()) >= 20 for reason in acknowledged.values()), acknowledged
    report = json.loads((dev.outdir / "validation-report.json").read_text())
    assert report["pluginReports"] == []  # nothing left unanswered


def test_an_acknowledgement_without_a_reason_is_refused() -> None:
    stack = cdk.Stack(cdk.App(), "Plain")
    with pytest.raises(ValueError, match="needs a real reason"):
        acknowledge(stack, **{"AwsSolutions-S1": "because"})


def test_removing_a_buckets_encryption_and_logging_fails_synthesis_in_all_three_packs(tmp_path: Path) -> None:
    app = build_app(stage="dev", outdir=str(tmp_path), context={"endpoints": ENDPOINTS})
    data = next(c for c in app.node.children if isinstance(c, cdk.Stack) and c.stack_name.endswith("-data"))
    artifacts = next(c for c in data.node.find_all() if isinstance(c, s3.CfnBucket) and "Artifacts" in c.node.path)
    artifacts.bucket_encryption = None  # on the L1 itself: a raw override would slip past cdk-nag
    artifacts.logging_configuration = None
    with pytest.raises(Exception) as failed:
        app.synth()
    for rule in ("HIPAA.Security-S3DefaultEncryptionKMS", "NIST.800.53.R5-S3DefaultEncryptionKMS",
                 "AwsSolutions-S1", "HIPAA.Security-S3BucketLoggingEnabled"):
        assert rule in str(failed.value)  # every pack runs on the data stack


def test_an_unacknowledged_finding_fails_synthesis(tmp_path: Path) -> None:
    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Insecure")
    s3.Bucket(stack, "Plain")  # no TLS enforcement, no access logs
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(Exception, match=r"AwsSolutions-S(1|10)"):
        app.synth()


def test_removing_the_approvers_condition_fails_the_least_privilege_check(dev: Synth) -> None:
    document = dev.json("registry")
    approvers_may_only_change_approval_status(document)
    loosened = copy.deepcopy(document)
    for resource in loosened["Resources"].values():
        for statement in resource.get("Properties", {}).get("PolicyDocument", {}).get("Statement", []):
            if statement.get("Sid") == "ApprovalStatusOnly":
                del statement["Condition"]
    with pytest.raises(AssertionError):
        approvers_may_only_change_approval_status(loosened)


def _findings(path: Path) -> list[Any]:
    from cfnlint.api import lint

    return [m for m in lint(path.read_text(), regions=REGIONS) if m.rule.id[0] in "EW"
            and not (m.rule.id == "W3005" and any(p in str(m.path) + m.message for p in CDK_PROVIDERS))
            and not (m.rule.id == "W3010" and path.name.endswith("-network.template.json"))]


def test_every_template_of_both_stages_passes_cfn_lint(dev: Synth, prod: Synth) -> None:
    templates = sorted([*dev.outdir.glob("*.template.json"), *prod.outdir.glob("*.template.json")])
    assert len(templates) == 14  # seven stacks, two stages
    for path in templates:
        findings = _findings(path)
        assert findings == [], (path.name, [str(m) for m in findings])


def test_cfn_lint_finds_a_broken_template(dev: Synth, tmp_path: Path) -> None:
    document = dev.json("monitoring")
    alarm = next(r for r in document["Resources"].values() if r["Type"] == "AWS::CloudWatch::Alarm")
    alarm["Properties"]["ComparisonOperator"] = "MoreThan"
    broken = tmp_path / "broken.template.json"
    broken.write_text(json.dumps(document))
    assert any(m.rule.id.startswith("E") for m in _findings(broken))
