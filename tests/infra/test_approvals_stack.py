"""The approval stack: the approval server as a service, with the same rules as on a laptop. Who can reach it, where
its data lives, and that no role but the server's writes the audit log or calls a managed MLflow."""

from __future__ import annotations

import json
from typing import Any

from tests.infra.conftest import Synth


def _of_type(document: dict[str, Any], kind: str) -> dict[str, Any]:
    return {k: r for k, r in document["Resources"].items() if r["Type"] == kind}


def test_people_sign_in_with_cognito_at_the_public_listener_and_the_pool_requires_mfa(dev: Synth) -> None:
    document = dev.json("approvals")
    listeners = {k: r["Properties"] for k, r in _of_type(document, "AWS::ElasticLoadBalancingV2::Listener").items()}
    public = next(p for k, p in listeners.items() if k.startswith("PublicLb"))
    assert public["Protocol"] == "HTTPS" and public["Certificates"]
    kinds = [a["Type"] for a in public["DefaultActions"]]
    assert kinds == ["authenticate-cognito", "forward"]
    internal = next(p for k, p in listeners.items() if k.startswith("InternalLb"))
    assert [a["Type"] for a in internal["DefaultActions"]] == ["forward"] and internal["Protocol"] == "HTTPS"
    [pool] = _of_type(document, "AWS::Cognito::UserPool").values()
    assert pool["Properties"]["MfaConfiguration"] == "ON"
    assert pool["Properties"]["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True  # no self sign-up
    [association] = _of_type(document, "AWS::WAFv2::WebACLAssociation").values()
    assert "PublicLb" in json.dumps(association["Properties"]["ResourceArn"])


def test_tasks_take_traffic_only_from_the_load_balancers_and_the_database_only_from_the_tasks(dev: Synth) -> None:
    document = dev.json("approvals")
    groups = _of_type(document, "AWS::EC2::SecurityGroup")
    ingress = _of_type(document, "AWS::EC2::SecurityGroupIngress")
    task = next(k for k in groups if k.startswith("TaskGroup"))
    sources = {json.dumps(r["Properties"]["SourceSecurityGroupId"]) for r in ingress.values()
               if r["Properties"]["GroupId"] == {"Fn::GetAtt": [task, "GroupId"]}}
    assert sources == {json.dumps({"Fn::GetAtt": [k, "GroupId"]}) for k in groups
                       if k.startswith(("PublicLbGroup", "InternalLbGroup"))}
    assert not groups[task]["Properties"].get("SecurityGroupIngress")  # no CIDR rule on the tasks
    internal = next(k for k in groups if k.startswith("InternalLbGroup"))
    assert all("CidrIp" not in rule for rule in groups[internal]["Properties"].get("SecurityGroupIngress", []))
    database = next(k for k in groups if k.startswith("DatabaseGroup"))
    from_db = {json.dumps(r["Properties"]["SourceSecurityGroupId"]) for r in ingress.values()
               if r["Properties"]["GroupId"] == {"Fn::GetAtt": [database, "GroupId"]}}
    assert json.dumps({"Fn::GetAtt": [task, "GroupId"]}) in from_db


def test_the_database_is_encrypted_private_and_retained_in_prod(dev: Synth, prod: Synth) -> None:
    for stage in (dev, prod):
        [db] = _of_type(stage.json("approvals"), "AWS::RDS::DBInstance").values()
        props = db["Properties"]
        assert props["StorageEncrypted"] is True and props["KmsKeyId"] and props["PubliclyAccessible"] is False
        assert props["Engine"] == "postgres"
        [subnets] = _of_type(stage.json("approvals"), "AWS::RDS::DBSubnetGroup").values()
        assert "databases" in json.dumps(subnets["Properties"]["SubnetIds"]).lower() or subnets
        assert (db["DeletionPolicy"] == "Retain") is (stage is prod)
        assert props.get("DeletionProtection", False) is (stage is prod)
        assert props.get("MultiAZ", False) is (stage is prod)
    network = dev.json("network")
    isolated = [r for r in _of_type(network, "AWS::EC2::Subnet").values()
                if any(t["Key"] == "aws-cdk:subnet-name" and t["Value"] == "databases" for t in r["Properties"]["Tags"])]
    assert isolated and all(any(t["Key"] == "aws-cdk:subnet-type" and t["Value"] == "Isolated"
                                for t in r["Properties"]["Tags"]) for r in isolated)


def _statements(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for policy in _of_type(document, kind).values():
            roles = json.dumps(policy["Properties"].get("Roles", []))
            found += [(roles, s) for s in policy["Properties"]["PolicyDocument"]["Statement"]]
    return found


def test_each_flow_role_reads_only_its_own_accounts_secret(dev: Synth) -> None:
    document = dev.json("orchestration")
    reads: dict[str, set[str]] = {}
    for roles, statement in _statements(document):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if "secretsmanager:GetSecretValue" in actions:
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            reads.setdefault(roles, set()).update(json.dumps(r) for r in resources)
    flow = {roles: secrets for roles, secrets in reads.items() if "FlowRole" in roles}
    assert len(flow) == 3 and all(len(secrets) == 1 for secrets in flow.values())
    assert len({next(iter(s)) for s in flow.values()}) == 3  # three different secrets
    for account in ("Pipeline", "Watcher", "Release"):
        [secrets] = [s for r, s in flow.items() if f"FlowRoleGenaiops{account}" in r]
        assert f"AccountGenaiops{account}" in next(iter(secrets))


def test_no_role_calls_managed_mlflow_or_writes_the_audit_bucket_but_the_servers(dev: Synth, prod: Synth) -> None:
    for stage in (dev, prod):
        for lifecycle in ("network", "data", "approvals", "registry", "monitoring", "serving", "orchestration"):
            document = stage.json(lifecycle)
            for roles, statement in _statements(document):
                actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                assert not [a for a in actions if a.startswith("sagemaker-mlflow:")], (lifecycle, roles)
                if "audit" in json.dumps(statement.get("Resource", "")).lower() and statement.get("Effect") == "Allow":
                    writes = [a for a in actions if a.startswith("s3:") and not a.startswith(("s3:Get", "s3:List"))]
                    assert not writes or (lifecycle == "approvals" and "ServerTaskRole" in roles), (lifecycle, roles)
        document = stage.json("approvals")
        [policy] = _of_type(document, "AWS::S3::BucketPolicy").values() if False else [
            p for p in _of_type(document, "AWS::S3::BucketPolicy").values() if "Audit" in json.dumps(p["Properties"]["Bucket"])]
        [deny] = [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
                  if s["Effect"] == "Deny" and "s3:PutObject" in s["Action"]]
        assert "ServerTaskRole" in json.dumps(deny["Condition"]["ArnNotEquals"]["aws:PrincipalArn"])
        [bucket] = [b for k, b in _of_type(document, "AWS::S3::Bucket").items() if k.startswith("Audit")]
        assert bucket["Properties"]["ObjectLockEnabled"] is True
        mode = bucket["Properties"]["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]["Mode"]
        assert mode == ("COMPLIANCE" if stage is prod else "GOVERNANCE")


def test_the_server_runs_the_repositorys_image_as_two_private_tasks(dev: Synth) -> None:
    document = dev.json("approvals")
    [service] = _of_type(document, "AWS::ECS::Service").values()
    assert service["Properties"]["DesiredCount"] == 2
    assert service["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
    [task] = _of_type(document, "AWS::ECS::TaskDefinition").values()
    [container] = task["Properties"]["ContainerDefinitions"]
    assert container["Command"] == ["genaiops", "approval-server"]
    assert "cdk-hnb659fds-container-assets" in json.dumps(container["Image"])  # the image asset, in ECR
    secrets = {s["Name"] for s in container["Secrets"]}
    assert {"GENAIOPS_SERVER_DB_PASSWORD", "GENAIOPS_SERVER_RELEASE_PASSWORD"} <= secrets
    assert not [e for e in container["Environment"] if "PASSWORD" in e["Name"]]


def test_the_servers_environment_names_only_settings_that_exist_and_its_config_is_in_the_image(dev: Synth) -> None:
    from pathlib import Path

    from pipelines.settings import ENV_PREFIX, SERVER_PREFIX, ServerSettings, Settings, load_config

    [task] = _of_type(dev.json("approvals"), "AWS::ECS::TaskDefinition").values()
    [container] = task["Properties"]["ContainerDefinitions"]
    names = {e["Name"] for e in container["Environment"]} | {s["Name"] for s in container["Secrets"]}
    known = {f"{ENV_PREFIX}{n}".upper() for n in Settings.model_fields} | \
        {f"{SERVER_PREFIX}{n}".upper() for n in ServerSettings.model_fields}
    assert {n for n in names if n.startswith(ENV_PREFIX)} <= known
    config = {e["Name"]: e["Value"] for e in container["Environment"]}["GENAIOPS_CONFIG"]
    repository = Path(__file__).parents[2]
    assert load_config(repository / config).approval.sign_in == "load-balancer"  # people sign in at the ALB
    assert f"COPY {config.split('/')[0]} " in (repository / "Dockerfile").read_text()
