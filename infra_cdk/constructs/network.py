"""The workloads' network: private subnets, flow logs, and VPC endpoints for every AWS API the platform calls."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra_cdk.constructs.logs import LogKey

# Every AWS API the flows, the training jobs and the endpoints call, reached without leaving the VPC.
INTERFACE_ENDPOINTS: dict[str, ec2.InterfaceVpcEndpointAwsService] = {
    "SageMakerApi": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_API,
    "SageMakerRuntime": ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_RUNTIME,
    "Sts": ec2.InterfaceVpcEndpointAwsService.STS,
    "CloudWatch": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Ecr": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "SecretsManager": ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER,
    "Sns": ec2.InterfaceVpcEndpointAwsService.SNS,  # the flows' notifications
    "Kms": ec2.InterfaceVpcEndpointAwsService.KMS,  # the SDKs' own KMS calls (data keys for captured data)
    "Ecs": ec2.InterfaceVpcEndpointAwsService.ECS,  # the Prefect worker starts each flow run as an ECS task
    "Ec2": ec2.InterfaceVpcEndpointAwsService.EC2,  # the worker reads its subnets and security groups
    "ApplicationAutoscaling": ec2.InterfaceVpcEndpointAwsService.APPLICATION_AUTOSCALING,  # the deployer's scaling
}


class PrivateNetwork(Construct):
    """A VPC whose workloads run in private subnets only.

    The AWS APIs the platform calls are reached through VPC endpoints (an S3 gateway and the interface endpoints
    above). With `nat_gateways` > 0 the private subnets also route to NAT gateways in small public subnets that
    hold nothing else, for what is outside the VPC: the Prefect API (Prefect Cloud or a server elsewhere), the
    worker's image and `prefect-aws` from their public registries, and SageMaker's managed MLflow, whose
    tracking server is reached over its own HTTPS endpoint. With 0 the subnets are isolated: the Prefect API
    must then be reachable privately and the worker's image, with `prefect-aws`, must come from ECR.
    """

    def __init__(self, scope: Construct, id: str, *, cidr: str, max_azs: int, nat_gateways: int, log_key: LogKey,
                 log_days: logs.RetentionDays, retain: bool) -> None:
        super().__init__(scope, id)
        private = ec2.SubnetType.PRIVATE_WITH_EGRESS if nat_gateways else ec2.SubnetType.PRIVATE_ISOLATED
        subnets = [ec2.SubnetConfiguration(name="workloads", subnet_type=private, cidr_mask=20),
                   # The approval server's database: no route out at all, reached from the workloads only.
                   ec2.SubnetConfiguration(name="databases", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24)]
        if nat_gateways:
            subnets.insert(0, ec2.SubnetConfiguration(name="egress", subnet_type=ec2.SubnetType.PUBLIC,
                                                      cidr_mask=26, map_public_ip_on_launch=False))
        self.flow_logs = log_key.group("FlowLogs", days=log_days, retain=retain)
        # With the region known (as `cdk deploy` knows it), the zones are named here: `max_azs` would look them up
        # (a context lookup); without it, CloudFormation picks them (Fn::GetAZs) and there are at most two.
        region = cdk.Stack.of(self).region
        zones = None if cdk.Token.is_unresolved(region) else [f"{region}{z}" for z in "abc"[:max_azs]]
        self.vpc = ec2.Vpc(
            self, "Vpc", ip_addresses=ec2.IpAddresses.cidr(cidr), nat_gateways=nat_gateways,
            **({"availability_zones": zones} if zones else {"max_azs": max_azs}),
            subnet_configuration=subnets, restrict_default_security_group=True,
            flow_logs={"All": ec2.FlowLogOptions(destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_logs),
                                                 traffic_type=ec2.FlowLogTrafficType.ALL)},
            gateway_endpoints={"S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)},
        )
        self.workload_subnets = ec2.SubnetSelection(subnet_type=private)
        # One group for training jobs, endpoints and the Prefect worker: HTTPS out, and all traffic between
        # its members (a distributed training job's nodes talk to each other).
        self.workloads = ec2.SecurityGroup(self, "Workloads", vpc=self.vpc, allow_all_outbound=False,
                                           description="genaiops workloads: HTTPS out, members to each other")
        self.workloads.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS: VPC endpoints, Prefect API")
        self.workloads.add_ingress_rule(self.workloads, ec2.Port.all_traffic(), "between members (distributed jobs)")
        self.workloads.add_egress_rule(self.workloads, ec2.Port.all_traffic(), "between members (distributed jobs)")
        endpoint_group = ec2.SecurityGroup(self, "Endpoints", vpc=self.vpc, allow_all_outbound=False,
                                           description="genaiops VPC interface endpoints: HTTPS from the workloads")
        endpoint_group.add_ingress_rule(self.workloads, ec2.Port.tcp(443), "HTTPS from the workloads")
        for name, service in INTERFACE_ENDPOINTS.items():
            self.vpc.add_interface_endpoint(name, service=service, subnets=self.workload_subnets, open=False,
                                            security_groups=[endpoint_group], private_dns_enabled=True)
