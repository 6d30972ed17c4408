"""The approval stack: the approval server (`genaiops approval-server`: MLflow with the approval rules) as a service.

- two Fargate tasks in the private subnets, from the repository's Dockerfile (a CDK image asset pushed to ECR);
- PostgreSQL on RDS for the backend and user stores: KMS-encrypted, in isolated subnets, reached only from the
  tasks, its credentials a generated Secrets Manager secret; retained with deletion protection in prod;
- people through a public ALB (ACM certificate, WAF) whose HTTPS listener signs them in with Cognito (MFA
  required, no self sign-up; a federated IdP can be added to the pool) before anything reaches the server; the
  server verifies the ALB's signed `x-amzn-oidc-data` itself (`model_registry.sign_in`);
- service accounts (pipeline, watcher, release) through an internal ALB open only to the workloads' security group,
  with basic auth; each account's password is its own secret, which only its flow role and the server may read;
- the audit log in a bucket with S3 Object Lock that only the server's role may write: its policy denies every
  other principal's write, whatever their IAM policies say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_elasticloadbalancingv2_actions as elbv2_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as targets
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from contracts import names as N
from infra_cdk.constructs.ids import logical_id
from infra_cdk.constructs.logs import LogKey
from infra_cdk.constructs.nag import acknowledge
from infra_cdk.constructs.storage import REPLICATION, AccessLogBucket

PORT = 5000
DATABASE = "mlflow"
REPOSITORY = Path(__file__).resolve().parent.parent  # the Dockerfile's folder
class ACCOUNTS:
    admin_account, pipeline_account = N.ADMIN_ACCOUNT, N.PIPELINE_ACCOUNT
    watcher_account, release_account = N.WATCHER_ACCOUNT, N.RELEASE_ACCOUNT


class ApprovalStack(cdk.Stack):
    """The approval server on ECS Fargate behind two load balancers, on RDS PostgreSQL, with its audit bucket.
    Its outputs become GENAIOPS_MLFLOW_TRACKING_URI (the internal URL), GENAIOPS_AUDIT_BUCKET and the approvers'
    URL; `secrets` (account name -> secret) go to the orchestration stack's flow roles."""

    def __init__(self, scope: Construct, id: str, *, stage: str, vpc: ec2.IVpc, workloads: ec2.ISecurityGroup,
                 subnets: ec2.SubnetSelection,
                 artifacts: s3.IBucket, artifact_access: iam.IManagedPolicy, key: kms.IKey, sagemaker_role: iam.IRole,
                 domain: str, certificate_arn: str | None, retain: bool, log_days: logs.RetentionDays,
                 db_instance: str, multi_az: bool, audit_days: int, access_log_days: int, **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        removal = cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY
        self.domain = domain
        internal_domain = f"internal.{domain}"
        secret_key = kms.Key(self, "Key", enable_key_rotation=True, removal_policy=removal,
                             description="genaiops approvals: its database, secrets and audit log")
        self.key = secret_key
        access_logs = AccessLogBucket(self, "AccessLogs", retain=retain, days=access_log_days).bucket

        # The audit log: Object Lock (compliance in prod: no one can shorten it), written by the server alone.
        self.audit = s3.Bucket(
            self, "Audit", bucket_name=audit_bucket_name(self, stage), encryption=s3.BucketEncryption.KMS,
            encryption_key=secret_key, bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL, enforce_ssl=True, versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED, object_lock_enabled=True,
            object_lock_default_retention=(s3.ObjectLockRetention.compliance if retain else
                                           s3.ObjectLockRetention.governance)(cdk.Duration.days(audit_days)),
            server_access_logs_bucket=access_logs, server_access_logs_prefix="audit/",
            removal_policy=removal)
        acknowledge(self.audit, **{"HIPAA.Security-S3BucketReplicationEnabled": REPLICATION,
                                   "NIST.800.53.R5-S3BucketReplicationEnabled": REPLICATION})

        # The database.
        db_group = ec2.SecurityGroup(self, "DatabaseGroup", vpc=vpc, allow_all_outbound=False,
                                     description="genaiops approvals database - from the approval server tasks only")
        db_secret = rds.DatabaseSecret(self, "DatabaseSecret", username="genaiops", encryption_key=secret_key,
                                       secret_name=f"genaiops/{stage}/approvals/database")
        db_secret.apply_removal_policy(removal)
        self.database = rds.DatabaseInstance(
            self, "Database", engine=rds.DatabaseInstanceEngine.postgres(version=rds.PostgresEngineVersion.VER_17_9),
            instance_type=ec2.InstanceType(db_instance), vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_group_name="databases"),
            security_groups=[db_group], credentials=rds.Credentials.from_secret(db_secret),
            database_name=DATABASE, storage_encrypted=True, storage_encryption_key=secret_key, multi_az=multi_az,
            allocated_storage=20, max_allocated_storage=100, publicly_accessible=False,
            backup_retention=cdk.Duration.days(30 if retain else 7), deletion_protection=retain,
            removal_policy=cdk.RemovalPolicy.RETAIN if retain else cdk.RemovalPolicy.DESTROY,
            cloudwatch_logs_exports=["postgresql", "upgrade"],
            auto_minor_version_upgrade=True, iam_authentication=True, port=5433,
            enable_performance_insights=True, performance_insight_encryption_key=secret_key,
            monitoring_interval=cdk.Duration.seconds(60), copy_tags_to_snapshot=True)
        self.database.add_rotation_single_user(automatically_after=cdk.Duration.days(30))
        backups = "RDS's automated backups (7 days in dev, 30 in prod) with point-in-time recovery, not AWS Backup."
        acknowledge(self.database, **{"HIPAA.Security-RDSInBackupPlan": backups, "NIST.800.53.R5-RDSInBackupPlan": backups,
                                      "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                                      "AmazonRDSEnhancedMonitoringRole]": "RDS enhanced monitoring's own role."})
        rotation_rule = ("The rotation function's ingress names the database port by a reference, which this rule "
                         "cannot read; the database takes connections on 5433 from the tasks and the rotation only.")
        acknowledge(db_group, **{f"{pack}-{rule}": rotation_rule for pack in ("HIPAA.Security", "NIST.800.53.R5")
                                 for rule in ("EC2RestrictedCommonPorts", "EC2RestrictedSSH")})
        acknowledge(self.database, **{
            "HIPAA.Security-RDSInstanceDeletionProtectionEnabled": "Deletion protection in prod; dev is disposable.",
            "AwsSolutions-RDS3": "A single-AZ database in dev; prod is Multi-AZ.",
            "AwsSolutions-RDS10": "Deletion protection in prod; dev is disposable.",
            "HIPAA.Security-RDSMultiAZSupport": "A single-AZ database in dev; prod is Multi-AZ.",
            "NIST.800.53.R5-RDSMultiAZSupport": "A single-AZ database in dev; prod is Multi-AZ.",
            "NIST.800.53.R5-RDSInstanceDeletionProtectionEnabled": "Deletion protection in prod; dev is disposable.",
        } if not retain else {})

        # The service accounts' passwords: one secret each; the server reads all, a flow role only its own.
        self.secrets: dict[str, secretsmanager.Secret] = {}
        for account in (ACCOUNTS.admin_account, ACCOUNTS.pipeline_account, ACCOUNTS.watcher_account,
                        ACCOUNTS.release_account):
            secret = secretsmanager.Secret(
                self, f"Account{''.join(p.title() for p in account.split('-'))}", encryption_key=secret_key,
                secret_name=f"genaiops/{stage}/approvals/{account}", removal_policy=removal,
                description=f"genaiops {stage}: the approval server's {account} account (username, password)",
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    secret_string_template=f'{{"username": "{account}"}}', generate_string_key="password",
                    exclude_punctuation=True, password_length=40))
            manual = ("The server sets each account's password from its secret when it starts: a new value takes "
                      "effect on the next deployment of the service, which a rotation would need.")
            acknowledge(secret, **{"AwsSolutions-SMG4": manual, "HIPAA.Security-SecretsManagerRotationEnabled": manual,
                                   "NIST.800.53.R5-SecretsManagerRotationEnabled": manual})
            self.secrets[account] = secret

        # The load balancers: people (public, Cognito, WAF) and service accounts (internal, workloads only).
        certificate = acm.Certificate.from_certificate_arn(self, "Certificate", certificate_arn) if certificate_arn \
            else acm.Certificate(self, "Certificate", domain_name=domain, subject_alternative_names=[internal_domain],
                                 validation=acm.CertificateValidation.from_dns())
        public_group = ec2.SecurityGroup(self, "PublicLbGroup", vpc=vpc, allow_all_outbound=False,
                                         description="genaiops approvals - the approvers load balancer (HTTPS)")
        public_group.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "approvers, signed in by Cognito")
        acknowledge(public_group, **{"AwsSolutions-EC23": "The approvers' sign-in page: HTTPS from anywhere, behind "
                                                          "WAF, and nothing passes before Cognito signs them in."})
        internal_group = ec2.SecurityGroup(self, "InternalLbGroup", vpc=vpc, allow_all_outbound=False,
                                           description="genaiops approvals - the service accounts load balancer")
        internal_group.add_ingress_rule(workloads, ec2.Port.tcp(443), "the flows' tasks")
        public = elbv2.ApplicationLoadBalancer(self, "PublicLb", vpc=vpc, internet_facing=bool(vpc.public_subnets),
                                               deletion_protection=retain,
                                               security_group=public_group, drop_invalid_header_fields=True,
                                               vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
                                               if vpc.public_subnets else subnets)
        internal = elbv2.ApplicationLoadBalancer(self, "InternalLb", vpc=vpc, internet_facing=False, vpc_subnets=subnets,
                                                 deletion_protection=retain,
                                                 security_group=internal_group, drop_invalid_header_fields=True)
        acknowledge(internal, **{"NIST.800.53.R5-ALBWAFEnabled": "Internal, open to the workloads' security group "
                                                                  "only: the flows' service accounts, with basic auth."})
        for name, balancer in (("public", public), ("internal", internal)):
            if not retain:
                acknowledge(balancer, **{f"{pack}-ELBDeletionProtectionEnabled": "Deletion protection in prod; dev "
                                                                                 "is disposable."
                                         for pack in ("HIPAA.Security", "NIST.800.53.R5")})
            if not cdk.Token.is_unresolved(self.region):  # `cdk deploy` knows it; ELB's log delivery needs it
                balancer.log_access_logs(access_logs, prefix=f"alb-{name}")
                continue
            reason = ("Synthesized without a region (`cdk deploy` gives one): ELB's access log delivery is "
                      "per region, so the logs are turned on when the region is known.")
            acknowledge(balancer, **{"AwsSolutions-ELB2": reason, "HIPAA.Security-ELBLoggingEnabled": reason,
                                     "NIST.800.53.R5-ELBLoggingEnabled": reason})

        # The service.
        task_group = ec2.SecurityGroup(self, "TaskGroup", vpc=vpc, allow_all_outbound=True,
                                       description="genaiops approvals server - from its load balancers only")
        for group in (public_group, internal_group):
            task_group.add_ingress_rule(group, ec2.Port.tcp(PORT), "its load balancers")
        db_group.add_ingress_rule(task_group, ec2.Port.tcp(5433), "the approval server's tasks")
        server_logs = LogKey(self, "LogKey", retain=retain, purpose="the approval server").group(
            "ServerLogs", days=log_days, retain=retain)
        task = ecs.FargateTaskDefinition(self, "Server", cpu=1024, memory_limit_mib=2048)
        image = ecr_assets.DockerImageAsset(self, "Image", directory=str(REPOSITORY),
                                            platform=ecr_assets.Platform.LINUX_AMD64)
        secret = db_secret
        task.add_container(
            "approval-server", image=ecs.ContainerImage.from_docker_image_asset(image),
            command=["genaiops", "approval-server"], port_mappings=[ecs.PortMapping(container_port=PORT)],
            environment={
                "GENAIOPS_BACKEND": "aws", "GENAIOPS_CONFIG": "configs/aws.yaml",  # its `approval` rules
                "GENAIOPS_REGION": self.region, "GENAIOPS_ARTIFACT_BUCKET": artifacts.bucket_name,
                "GENAIOPS_KMS_KEY_ID": key.key_arn, "GENAIOPS_AUDIT_BUCKET": self.audit.bucket_name,
                "GENAIOPS_MLFLOW_TRACKING_URI": f"https://{internal_domain}",
                "GENAIOPS_SAGEMAKER_ROLE_ARN": sagemaker_role.role_arn,
                "GENAIOPS_SERVER_HOST": "0.0.0.0", "GENAIOPS_SERVER_PORT": str(PORT),
                "GENAIOPS_SERVER_SIGNER_ARN": public.load_balancer_arn,
                "GENAIOPS_SERVER_ALLOWED_HOSTS": f"{domain},{internal_domain}",
                "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true"},
            secrets={
                "GENAIOPS_SERVER_DB_HOST": ecs.Secret.from_secrets_manager(secret, "host"),
                "GENAIOPS_SERVER_DB_PORT": ecs.Secret.from_secrets_manager(secret, "port"),
                "GENAIOPS_SERVER_DB_USERNAME": ecs.Secret.from_secrets_manager(secret, "username"),
                "GENAIOPS_SERVER_DB_PASSWORD": ecs.Secret.from_secrets_manager(secret, "password"),
                **{f"GENAIOPS_SERVER_{field}_PASSWORD": ecs.Secret.from_secrets_manager(self.secrets[account], "password")
                   for field, account in (("ADMIN", ACCOUNTS.admin_account), ("PIPELINE", ACCOUNTS.pipeline_account),
                                          ("WATCHER", ACCOUNTS.watcher_account),
                                          ("RELEASE", ACCOUNTS.release_account))}},
            logging=ecs.LogDrivers.aws_logs(stream_prefix="server", log_group=server_logs),
            readonly_root_filesystem=False)
        task.task_role.add_managed_policy(artifact_access)
        self.audit.grant_read(task.task_role)
        self.audit.grant_put(task.task_role)  # PutObject only: no delete, no retention change
        self.server_role = task.task_role
        inline = "The grants of this service's roles, each held to its own resources (CDK's default policy)."
        for role in (task.task_role, task.obtain_execution_role()):
            acknowledge(role, **{"HIPAA.Security-IAMNoInlinePolicy": inline, "NIST.800.53.R5-IAMNoInlinePolicy": inline})
        acknowledge(task.obtain_execution_role(), **{"AwsSolutions-IAM5[Resource::*]": "ecr:GetAuthorizationToken "
                                                                                     "has no resource type; the pull "
                                                                                     "is held to the image asset."})
        acknowledge(task, **{"AwsSolutions-ECS2": "The environment holds no secret: names, ARNs and switches; the "
                                                  "database and account passwords come from Secrets Manager."})
        acknowledge(task.task_role, **{
            f"AwsSolutions-IAM5[Resource::<{logical_id(self.audit)}.Arn>/*]": "The audit log's entries, each a new object.",
            "AwsSolutions-IAM5[Action::s3:GetObject*]": "Reads of the audit log's entries.",
            "AwsSolutions-IAM5[Action::s3:GetBucket*]": "Reads of the audit log's entries.",
            "AwsSolutions-IAM5[Action::s3:List*]": "Reads of the audit log's entries.",
            "AwsSolutions-IAM5[Action::kms:ReEncrypt*]": "The audit bucket's key, for its objects.",
            "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]": "The audit bucket's key, for its objects.",
            "AwsSolutions-IAM5[Action::s3:Abort*]": "An interrupted upload of an audit entry.",
        })
        cluster = ecs.Cluster(self, "Cluster", vpc=vpc, container_insights_v2=ecs.ContainerInsights.ENABLED)
        service = ecs.FargateService(self, "Service", cluster=cluster, task_definition=task, desired_count=2,
                                     security_groups=[task_group], assign_public_ip=False,
                                     vpc_subnets=subnets,
                                     circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
                                     min_healthy_percent=50, max_healthy_percent=200)

        # The bucket policy: no principal but the server writes an entry or changes the bucket's lock.
        self.audit.add_to_resource_policy(iam.PolicyStatement(
            effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
            actions=["s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectRetention",
                     "s3:PutObjectLegalHold", "s3:BypassGovernanceRetention", "s3:PutBucketObjectLockConfiguration"],
            resources=[self.audit.bucket_arn, self.audit.arn_for_objects("*")],
            conditions={"ArnNotEquals": {"aws:PrincipalArn": task.task_role.role_arn}}))

        # People: Cognito signs them in at the public load balancer.
        pool = cognito.UserPool(
            self, "Approvers", self_sign_up_enabled=False, sign_in_aliases=cognito.SignInAliases(email=True),
            mfa=cognito.Mfa.REQUIRED, mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            password_policy=cognito.PasswordPolicy(min_length=14, require_digits=True, require_lowercase=True,
                                                   require_uppercase=True, require_symbols=True),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY, feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            removal_policy=removal, deletion_protection=retain)
        pool_domain = pool.add_domain("SignIn", cognito_domain=cognito.CognitoDomainOptions(
            domain_prefix=cdk.Fn.join("-", ["genaiops", stage, "approvals", cdk.Aws.ACCOUNT_ID])))
        client = pool.add_client(
            "Alb", generate_secret=True, o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL],
                callback_urls=[f"https://{domain}/oauth2/idpresponse"]),
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO])
        acknowledge(pool, **{"AwsSolutions-COG3": "Threat protection is on in full-function mode (the Plus plan)."})
        servers = elbv2.ApplicationTargetGroup(
            self, "People", vpc=vpc, port=PORT, protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP, health_check=elbv2.HealthCheck(path="/health"),
            deregistration_delay=cdk.Duration.seconds(30))
        accounts = elbv2.ApplicationTargetGroup(
            self, "Accounts", vpc=vpc, port=PORT, protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP, health_check=elbv2.HealthCheck(path="/health"),
            deregistration_delay=cdk.Duration.seconds(30))
        service.attach_to_application_target_group(servers)
        service.attach_to_application_target_group(accounts)
        public.add_listener("Https", port=443, open=False, certificates=[certificate], ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
                            default_action=elbv2_actions.AuthenticateCognitoAction(
                                user_pool=pool, user_pool_client=client, user_pool_domain=pool_domain,
                                session_timeout=cdk.Duration.hours(8),
                                next=elbv2.ListenerAction.forward([servers])))
        internal.add_listener("Https", port=443, open=False, certificates=[certificate],
                              ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
                              default_action=elbv2.ListenerAction.forward([accounts]))
        zone = route53.PrivateHostedZone(self, "Zone", zone_name=domain, vpc=vpc)
        route53.ARecord(self, "InternalName", zone=zone, record_name=internal_domain,
                        target=route53.RecordTarget.from_alias(targets.LoadBalancerTarget(internal)))
        route53.ARecord(self, "PublicName", zone=zone, record_name=domain,
                        target=route53.RecordTarget.from_alias(targets.LoadBalancerTarget(public)))

        acl = wafv2.CfnWebACL(
            self, "Waf", scope="REGIONAL", default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility("genaiops-approvals"),
            rules=[_managed(name, priority) for priority, name in enumerate(
                ("AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet",
                 "AWSManagedRulesAmazonIpReputationList"))] + [wafv2.CfnWebACL.RuleProperty(
                name="rate-limit", priority=10, action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                statement=wafv2.CfnWebACL.StatementProperty(rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                    aggregate_key_type="IP", limit=2000)), visibility_config=_visibility("rate-limit"))])
        wafv2.CfnWebACLAssociation(self, "WafAssociation", resource_arn=public.load_balancer_arn,
                                   web_acl_arn=acl.attr_arn)
        waf_logs = logs.LogGroup(self, "WafLogs", log_group_name=f"aws-waf-logs-genaiops-{stage}-approvals",
                                 retention=log_days, removal_policy=removal)
        acknowledge(waf_logs, **{f"{pack}-CloudWatchLogGroupEncrypted": "WAF delivers its logs to a log group that "
                                                                         "CloudWatch Logs encrypts with its own key."
                                 for pack in ("HIPAA.Security", "NIST.800.53.R5")})
        wafv2.CfnLoggingConfiguration(self, "WafLogging", resource_arn=acl.attr_arn, log_destination_configs=[
            self.format_arn(service="logs", resource="log-group", resource_name=waf_logs.log_group_name,
                            arn_format=cdk.ArnFormat.COLON_RESOURCE_NAME)])

        self.tracking_url = f"https://{internal_domain}"
        for name, value, description in (
                ("ApprovalsUrl", f"https://{domain}", "where approvers sign in (point its DNS at PublicLbDns)"),
                ("PublicLbDns", public.load_balancer_dns_name, "the approvers' load balancer: the CNAME target"),
                ("TrackingUri", self.tracking_url, "GENAIOPS_MLFLOW_TRACKING_URI"),
                ("AuditBucketName", self.audit.bucket_name, "GENAIOPS_AUDIT_BUCKET"),
                ("AccountSecretsPrefix", f"genaiops/{stage}/approvals/", "GENAIOPS_MLFLOW_SECRETS_PREFIX"),
                ("UserPoolId", pool.user_pool_id, "where the platform team adds approvers (MFA is required)")):
            cdk.CfnOutput(self, name, value=value, description=description)


def _visibility(name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(cloud_watch_metrics_enabled=True, metric_name=name,
                                                     sampled_requests_enabled=True)


def _managed(name: str, priority: int) -> wafv2.CfnWebACL.RuleProperty:
    return wafv2.CfnWebACL.RuleProperty(
        name=name, priority=priority, override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
        statement=wafv2.CfnWebACL.StatementProperty(managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
            vendor_name="AWS", name=name)), visibility_config=_visibility(name))


def audit_bucket_name(stack: cdk.Stack, stage: str) -> str:
    """Named by stage, account and region, so that a flow role in another stack names it without an export."""
    return f"genaiops-{stage}-audit-{stack.account}-{stack.region}"
