"""The network stack: the VPC every workload runs in."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra_cdk.constructs.logs import LogKey
from infra_cdk.constructs.network import PrivateNetwork


class NetworkStack(cdk.Stack):
    """Private subnets, flow logs and VPC endpoints; its outputs become GENAIOPS_SUBNETS and
    GENAIOPS_SECURITY_GROUP_IDS."""

    def __init__(self, scope: Construct, id: str, *, cidr: str, max_azs: int, nat_gateways: int, retain: bool,
                 log_days: logs.RetentionDays, **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        key = LogKey(self, "LogKey", retain=retain, purpose="VPC flow logs")
        network = PrivateNetwork(self, "Network", cidr=cidr, max_azs=max_azs, nat_gateways=nat_gateways,
                                 log_key=key, log_days=log_days, retain=retain)
        self.vpc, self.workloads, self.workload_subnets = network.vpc, network.workloads, network.workload_subnets
        subnets = self.vpc.select_subnets(subnet_group_name="workloads").subnet_ids
        cdk.CfnOutput(self, "Subnets", value=cdk.Fn.join(",", subnets), description="GENAIOPS_SUBNETS")
        cdk.CfnOutput(self, "SecurityGroup", value=self.workloads.security_group_id,
                      description="GENAIOPS_SECURITY_GROUP_IDS")
        cdk.CfnOutput(self, "VpcId", value=self.vpc.vpc_id, description="the ECS work pool's `vpc_id`")
        cdk.CfnOutput(self, "WorkPoolNetwork", description="the ECS work pool's `network_configuration`",
                      value=self.to_json_string({"awsvpcConfiguration": {
                          "subnets": subnets, "securityGroups": [self.workloads.security_group_id],
                          "assignPublicIp": "DISABLED"}}))
