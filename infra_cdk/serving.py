"""The serving stack: the endpoints a team keeps as code (`GuardedEndpoint`), and the encrypted, expiring log
groups of every endpoint, including those the release flow makes (SageMaker otherwise creates them unencrypted and
kept forever)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from contracts.names import release_endpoint
from infra_cdk.config import EndpointAsCode
from infra_cdk.constructs.endpoint import GuardedEndpoint
from infra_cdk.constructs.ids import pascal
from infra_cdk.constructs.logs import LogKey


class ServingStack(cdk.Stack):
    def __init__(self, scope: Construct, id: str, *, models: Sequence[str], endpoints: Sequence[EndpointAsCode],
                 role: iam.IRole, key: kms.IKey, capture: s3.IBucket, vpc: ec2.IVpc, subnets: ec2.SubnetSelection,
                 security_group: ec2.ISecurityGroup, rollback_alarms: Mapping[str, Sequence[str]], retain: bool,
                 log_days: logs.RetentionDays, **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        log_key = LogKey(self, "LogKey", retain=retain, purpose="SageMaker endpoints")
        names = [*(release_endpoint(m) for m in models), *(e.name for e in endpoints)]
        self.log_groups = {name: log_key.group(f"Logs{pascal(name)}", days=log_days, retain=retain,
                                               name=f"/aws/sagemaker/Endpoints/{name}") for name in names}
        subnet_ids = vpc.select_subnets(subnet_type=subnets.subnet_type).subnet_ids
        self.endpoints = {
            spec.name: GuardedEndpoint(self, f"Endpoint{pascal(spec.name)}", spec=spec, role=role, key=key,
                                       capture=capture, subnets=subnet_ids,
                                       security_groups=[security_group.security_group_id],
                                       rollback_alarms=rollback_alarms.get(spec.name, []))
            for spec in endpoints}
        for spec in endpoints:
            self.endpoints[spec.name].node.add_dependency(self.log_groups[spec.name])
            cdk.CfnOutput(self, f"Endpoint{pascal(spec.name)}Name", value=spec.name,
                          description="an endpoint kept as code (invoke it with sagemaker-runtime)")
