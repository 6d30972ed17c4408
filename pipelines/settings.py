"""Where it runs (`Settings`, from GENAIOPS_* variables) and what it runs (`PipelineConfig`, from YAML).

Each stage's config model lives beside its stage; this module composes them, so no lower
layer imports `pipelines/`. Unknown keys are errors in both.
"""

from __future__ import annotations

import getpass
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_registry.approval import ApprovalConfig
from model_registry.sagemaker_mirror import ModelPackageConfig
from monitoring.monitor import MonitoringConfig
from pipelines.reliability import OrchestrationConfig
from serving.deployer import DeploymentConfig
from serving.package import PackageConfig
from serving.release import ReleaseConfig
from serving.rollout import RolloutConfig
from steps.data import DataConfig
from steps.evaluate import EvaluateConfig
from steps.finetune import FinetuneConfig
from steps.optimize import OptimizeConfig

_S = TypeVar("_S", bound=BaseSettings)
ENV_PREFIX = "GENAIOPS_"
SERVER_PREFIX = "GENAIOPS_SERVER_"  # the approval server's own settings (ServerSettings), not the pipeline's
DEFAULT_CONFIG_NAME = "configs/local.yaml"


class ConfigError(ValueError):
    """A config file or environment variable is wrong; the message names where and why."""


class Settings(BaseSettings):
    """Where the pipeline runs: backend, workspace, AWS coordinates, MLflow. From GENAIOPS_* variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    backend: Literal["local", "aws"] = "local"
    workspace: Path = Field(Path(".genaiops"), description="local state: artifacts, models, MLflow store")
    config: Path | None = Field(None, description="the pipeline config YAML; the embedded defaults when unset")
    region: str = "us-east-1"
    artifact_bucket: str | None = Field(None, description="S3 bucket of the artifact store (aws backend)")
    artifact_prefix: str = "genaiops"
    capture_bucket: str | None = Field(None, description="S3 bucket endpoints capture to (aws backend); default: the "
                                                         "artifact bucket's capture/ prefix")
    kms_key_id: str | None = Field(None, description="KMS key for S3 artifacts (aws backend)")
    audit_bucket: str | None = Field(None, description="the approval stack's audit bucket (aws backend; its "
                                                       "AuditBucketName): the approval server's entries, with S3 "
                                                       "Object Lock, that approvals are judged by")
    mlflow_tracking_uri: str | None = Field(None, description="defaults to a SQLite store in the workspace")
    mlflow_secrets_prefix: str | None = Field(
        None, description="where each flow's approval-server password is (aws backend; the approvals stack's "
                          "AccountSecretsPrefix): the secret <prefix><account> of the flow's own account")
    mlflow_ui_url: str = Field("http://127.0.0.1:5000", description="where approvers open the MLflow UI")
    sagemaker_role_arn: str | None = Field(None, description="execution role of SageMaker jobs (aws backend)")
    subnets: str = Field("", description="comma-separated subnet ids for SageMaker jobs (aws backend)")
    security_group_ids: str = Field("", description="comma-separated security group ids (aws backend)")
    sagemaker_endpoint_url: str | None = Field(
        None, description="the SageMaker hosting API (models, endpoint configs, endpoints) every client talks to; "
                          "unset: SageMaker on aws, the workspace's local control plane (started on demand) locally")
    sagemaker_runtime_url: str | None = Field(
        None, description="the SageMaker Runtime every sagemaker-runtime client talks to; unset: the SageMaker API's URL "
                          "when one is set (the local control plane answers both), else SageMaker Runtime's")
    notify_topic_arn: str | None = Field(None, description="the SNS topic of notifications and alarm actions (aws "
                                                           "backend; the monitoring stack's NotifyTopicArn)")
    image: str | None = Field(None, description="the genaiops container image (<repository uri>:<tag>) the ECS work "
                                                "pool runs the flows in; `prefect deploy` reads it from prefect.yaml")
    triggered_by: str = Field(default_factory=getpass.getuser, description="who or what started the run")
    ui_passwords: SecretStr | None = Field(
        None, description="user:password,... for the local MLflow UI users; generated into the workspace when unset")

    @model_validator(mode="after")
    def _aws_needs_coordinates(self) -> Settings:
        if self.backend == "aws":
            missing = [f"{ENV_PREFIX}{name.upper()}" for name in ("artifact_bucket", "mlflow_tracking_uri",
                                                                    "sagemaker_role_arn")
                       if getattr(self, name) is None]
            if missing:
                raise ValueError(f"the aws backend needs {', '.join(missing)}")
        return self

    @cached_property
    def root(self) -> Path:
        """The workspace as an absolute path."""
        return self.workspace.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def subnet_list(self) -> list[str]:
        return [s.strip() for s in self.subnets.split(",") if s.strip()]

    @property
    def security_group_list(self) -> list[str]:
        return [s.strip() for s in self.security_group_ids.split(",") if s.strip()]

    @property
    def mlflow_artifact_root(self) -> str:
        if self.backend == "aws":
            return f"s3://{self.artifact_bucket}/{self.artifact_prefix}/mlflow"
        return (self.root / "mlartifacts").as_uri()


class PipelineConfig(BaseModel):
    """What the pipeline runs: data, fine-tuning, evaluation, approval and monitoring, under one model name."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    model_name: str = Field("dialogue-summarizer", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
                            description="registered model name in MLflow")
    experiment: str = Field("genaiops-retrain", min_length=1, description="MLflow experiment of the runs")
    data: DataConfig = DataConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    optimize: OptimizeConfig = OptimizeConfig()
    approval: ApprovalConfig = ApprovalConfig()
    model_packages: ModelPackageConfig = ModelPackageConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    package: PackageConfig = PackageConfig()
    deployment: DeploymentConfig = DeploymentConfig()
    release: ReleaseConfig = ReleaseConfig()
    rollout: RolloutConfig = RolloutConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()


def load_settings() -> Settings:
    """Read Settings from the environment; unknown GENAIOPS_* variables are errors, not silently ignored."""
    return _from_environment(Settings, ENV_PREFIX, besides=SERVER_PREFIX)


def _from_environment(model: type[_S], prefix: str, besides: str | None = None) -> _S:
    """`model` from its `prefix`ed variables; an unknown one (other than `besides`'s) is an error that names it."""
    known = {f"{prefix}{name}".upper() for name in model.model_fields}
    unknown = sorted(k for k in os.environ if k.upper().startswith(prefix) and k.upper() not in known
                     and not (besides and k.upper().startswith(besides)))
    if unknown:
        raise ConfigError(f"environment: unknown variable(s) {unknown}; known: {sorted(known)}")
    try:
        return model()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "environment", prefix=prefix)) from exc


class ServerSettings(BaseSettings):
    """The approval server as the approval stack runs it (`genaiops approval-server`), from GENAIOPS_SERVER_*
    variables: its database (a URI, or the fields of the RDS secret the task gets), the load balancer whose
    sign-in it trusts, and the service accounts' passwords (each from its own secret)."""

    model_config = SettingsConfigDict(env_prefix=SERVER_PREFIX, frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="the address to listen on (0.0.0.0 in the container)")
    port: int = Field(5000, ge=1, le=65535)
    workers: int = Field(2, ge=1, le=16)
    database_uri: SecretStr | None = Field(None, description="the backend and user stores' database; default: "
                                                             "built from the DB_* fields, else the workspace's SQLite")
    db_host: str | None = None
    db_port: int = 5432
    db_name: str = "mlflow"
    db_username: str | None = None
    db_password: SecretStr | None = None
    signer_arn: str | None = Field(None, description="the public load balancer's ARN: people sign in through it")
    keys_url: str | None = Field(None, description="where its public keys are; default: the region's "
                                                   "https://public-keys.auth.elb.<region>.amazonaws.com/")
    claim: str = Field("email", description="the sign-in claim that names the MLflow user")
    allowed_hosts: str = Field("", description="comma-separated Host headers MLflow answers besides localhost and "
                                               "private addresses (the approvals domain)")
    admin_password: SecretStr | None = None
    pipeline_password: SecretStr | None = None
    watcher_password: SecretStr | None = None
    release_password: SecretStr | None = None

    def store_uri(self, settings: Settings) -> str:
        if self.database_uri is not None:
            return self.database_uri.get_secret_value()
        if self.db_host:
            from urllib.parse import quote

            if not self.db_username or self.db_password is None:
                raise ValueError(f"{SERVER_PREFIX}DB_HOST is set: {SERVER_PREFIX}DB_USERNAME and "
                                 f"{SERVER_PREFIX}DB_PASSWORD are needed too")
            return (f"postgresql://{quote(self.db_username, safe='')}:"
                    f"{quote(self.db_password.get_secret_value(), safe='')}@{self.db_host}:{self.db_port}/"
                    f"{quote(self.db_name, safe='')}")
        return settings.tracking_uri


def load_server_settings() -> ServerSettings:
    return _from_environment(ServerSettings, SERVER_PREFIX)


def load_config(path: Path | None) -> PipelineConfig:
    """Validate a YAML config file into a PipelineConfig; None gives the embedded defaults."""
    if path is None:
        return PipelineConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not {type(raw).__name__}")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path))) from exc


def resolve_config(config: PipelineConfig | dict[str, Any] | str | None, settings: Settings) -> PipelineConfig:
    """What a flow run runs: the config it was given (or its JSON form, as a run's parameters keep it), or a YAML
    path (a deployment's parameter), or else $GENAIOPS_CONFIG, or else the embedded defaults."""
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, dict):
        return PipelineConfig.model_validate(config)
    return load_config(Path(config) if config else settings.config)


def _describe(exc: ValidationError, where: str, prefix: str = "") -> str:
    lines = []
    for error in exc.errors():
        # Union members and validators appear in pydantic's path ("<stat>", "function-after[...]"); a user
        # knows only the keys of the file.
        key = ".".join(str(p) for p in error["loc"] if not str(p).startswith("<") and "[" not in str(p)) or "(top level)"
        if prefix and error["loc"]:
            key = prefix + key.upper()
        reason = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {key}: {reason}")
    return "\n".join(lines)


def as_document(settings: Settings, config: PipelineConfig) -> dict[str, Any]:
    """Settings and config merged into one plain document, as `genaiops config show` prints them."""
    return {
        "settings": {**settings.model_dump(mode="json"), "tracking_uri": settings.tracking_uri,
                     "workspace": str(settings.root)},
        "pipeline": config.model_dump(mode="json"),
    }
