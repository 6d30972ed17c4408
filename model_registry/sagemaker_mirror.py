"""The SageMaker Model Registry mirror (aws backend): one model package per MLflow model version.

MLflow is where approvers work and where identity is enforced (the genaiops-auth app), so it is
the source of approvals. Each pass of the approval watcher:

- mirrors every version that is not mirrored yet as a model package in the group (status, lineage
  as customer metadata, and the version's servable package with its image as the inference
  specification, so that a package approved in MLflow is the one a deployment serves);
- pushes MLflow's status to the package, with an approval description that names the approver,
  when it was decided and the note;
- brings changes made in SageMaker back: a package rejected (or sent back to pending) in Studio or
  through the API marks the MLflow version the same way and says who did it. An approval made in
  SageMaker is not an approval (no approvers group, no gate check, no audit there): the package
  is set back to MLflow's status and its description says where approvals are made.

Which side changed is told apart by `genaiops.sagemaker.synced_status`, the status both agreed on
after the last pass.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts import tags as T
from contracts.names import package_group
from model_registry.approval import ApprovalConfig, AuditEntry, gate_digest
from model_registry.audit import AuditLog, now
from model_registry.mlflow_registry import MlflowRegistry, RegisteredVersion

log = logging.getLogger(__name__)

MAX_DESCRIPTION = 1024  # ApprovalDescription and ModelPackageDescription
MAX_METADATA_VALUE = 256


class ModelPackageConfig(BaseModel):
    """How versions are mirrored into the SageMaker Model Registry (aws backend only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    enabled: bool = Field(True, description="mirror versions into a SageMaker model package group on the aws backend")
    group: str | None = Field(None, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$",
                              description="model package group; defaults to the MLflow model name")
    inference_image_uri: str | None = Field(
        None, description="serving container image for the package's inference specification "
                          "(e.g. the Hugging Face LLM inference image of the region); none leaves it out")
    content_types: list[str] = Field(default_factory=lambda: ["application/json"], min_length=1)
    response_types: list[str] = Field(default_factory=lambda: ["application/json"], min_length=1)
    inference_instance_types: list[str] = Field(default_factory=lambda: ["ml.g5.xlarge"], min_length=1)


class MirrorDecision(BaseModel):
    model_config = ConfigDict(frozen=True)
    version: str
    action: Literal["mirrored", "pushed", "pulled", "refused", "in sync", "skipped"]
    status: str
    detail: str = ""


class ModelPackageMirror:
    """Keeps one MLflow registered model and one SageMaker model package group in step."""

    def __init__(self, client: Any, config: ModelPackageConfig, model_name: str) -> None:
        self.client = client
        self.config = config
        self.group = config.group or package_group(model_name)

    def sync(self, registry: MlflowRegistry, audit: AuditLog, approval: ApprovalConfig) -> list[MirrorDecision]:
        """One pass over every version of the registry's model; returns what it did per version."""
        self._ensure_group(registry.model_name)
        decisions = []
        for version in registry.versions():
            try:
                decisions.append(self._sync_version(registry, audit, approval, version))
            except Exception as exc:  # one bad version must not stop the others from syncing
                log.exception("%s v%s: SageMaker mirror failed", version.name, version.version)
                decisions.append(MirrorDecision(version=version.version, action="skipped",
                                                status=version.tags.get(T.APPROVAL_STATUS, ""), detail=str(exc)))
        return decisions

    # --- one version -----------------------------------------------------------------------

    def _sync_version(self, registry: MlflowRegistry, audit: AuditLog, approval: ApprovalConfig,
                      version: RegisteredVersion) -> MirrorDecision:
        tags = version.tags
        status = tags.get(T.APPROVAL_STATUS, T.PENDING)
        arn = tags.get(T.SM_MODEL_PACKAGE) or self._find_package(version)
        if arn is None:
            arn = self._create_package(version, status, registry.artifact_location(version))
            registry.set_tag(version.version, T.SM_MODEL_PACKAGE, arn)
            registry.set_tag(version.version, T.SM_SYNCED_STATUS, status)
            log.info("%s v%s mirrored as %s (%s)", version.name, version.version, arn, status)
            return MirrorDecision(version=version.version, action="mirrored", status=status, detail=arn)
        if tags.get(T.SM_MODEL_PACKAGE) != arn:
            registry.set_tag(version.version, T.SM_MODEL_PACKAGE, arn)

        package = self.client.describe_model_package(ModelPackageName=arn)
        remote = package["ModelApprovalStatus"]
        synced = tags.get(T.SM_SYNCED_STATUS)
        if remote == status:
            if synced != status:
                registry.set_tag(version.version, T.SM_SYNCED_STATUS, status)
            return MirrorDecision(version=version.version, action="in sync", status=status, detail=arn)
        if remote == synced or synced is None:  # only MLflow moved: push it
            self._update(package, status, self._description(tags, status))
            registry.set_tag(version.version, T.SM_SYNCED_STATUS, status)
            log.info("%s v%s: SageMaker package set to %s", version.name, version.version, status)
            return MirrorDecision(version=version.version, action="pushed", status=status, detail=arn)
        return self._pull(registry, audit, approval, version, package, remote)

    def _pull(self, registry: MlflowRegistry, audit: AuditLog, approval: ApprovalConfig,
              version: RegisteredVersion, package: dict[str, Any], remote: str) -> MirrorDecision:
        """SageMaker moved since the last pass."""
        tags, status = version.tags, version.tags.get(T.APPROVAL_STATUS, T.PENDING)
        who = _modified_by(package)
        said = package.get("ApprovalDescription", "")
        if remote == T.APPROVED:
            reason = (f"approved in SageMaker by {who}, which does not count: approvals are made in the MLflow UI, "
                      f"where the approvers group, the gate and the audit log apply")
            self._update(package, status, f"{reason}. MLflow status: {status}.")
            registry.set_tag(version.version, T.SM_STATUS_CHANGE, f"{now()} {reason}; package set back to {status}")
            registry.set_tag(version.version, T.SM_SYNCED_STATUS, status)
            audit.append(AuditEntry(model=version.name, version=version.version, user=approval.watcher_account,
                                    at=now(), key=T.APPROVAL_STATUS, old=status, new=status,
                                    outcome=f"refused: {reason}", gate_digest=gate_digest(tags), note=said))
            log.warning("%s v%s: %s", version.name, version.version, reason)
            return MirrorDecision(version=version.version, action="refused", status=status, detail=reason)
        # A rejection, or a return to pending, is a revocation: it always stands.
        change = f"{now()} set to {remote} in SageMaker by {who}" + (f": {said}" if said else "")
        registry.set_tag(version.version, T.SM_STATUS_CHANGE, change[:5000])
        registry.set_tag(version.version, T.APPROVAL_STATUS, remote)
        registry.set_tag(version.version, T.SM_SYNCED_STATUS, remote)
        audit.append(AuditEntry(model=version.name, version=version.version, user=approval.watcher_account, at=now(),
                                key=T.APPROVAL_STATUS, old=status, new=remote,
                                outcome=f"mirrored from SageMaker: set by {who}", gate_digest=gate_digest(tags),
                                note=said))
        log.warning("%s v%s: %s; MLflow follows", version.name, version.version, change)
        return MirrorDecision(version=version.version, action="pulled", status=remote, detail=change)

    # --- SageMaker calls -----------------------------------------------------------------

    def _ensure_group(self, model_name: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.describe_model_package_group(ModelPackageGroupName=self.group)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
                raise
            self.client.create_model_package_group(
                ModelPackageGroupName=self.group,
                ModelPackageGroupDescription=f"Mirror of the MLflow registered model {model_name}; approve in MLflow.",
                Tags=[{"Key": T.MLFLOW_MODEL, "Value": model_name}])
            log.info("created SageMaker model package group %s", self.group)

    def _find_package(self, version: RegisteredVersion) -> str | None:
        """A package made by a pass that stopped before tagging the version (its client token says which)."""
        token = _client_token(version)
        paginator = self.client.get_paginator("list_model_packages")
        for page in paginator.paginate(ModelPackageGroupName=self.group):
            for summary in page["ModelPackageSummaryList"]:
                package = self.client.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
                metadata = package.get("CustomerMetadataProperties") or {}
                if metadata.get("genaiops.client_token") == token:
                    return str(summary["ModelPackageArn"])
        return None

    def _create_package(self, version: RegisteredVersion, status: str, location: str) -> str:
        request: dict[str, Any] = {
            "ModelPackageGroupName": self.group,
            "ModelPackageDescription": _truncate(
                f"MLflow {version.name} version {version.version}. {version.tags.get(T.GATE_SUMMARY, '')}"),
            "ModelApprovalStatus": status,
            "CustomerMetadataProperties": self._metadata(version, location),
            "ClientToken": _client_token(version),
        }
        if status != T.PENDING:
            request["ApprovalDescription"] = self._description(version.tags, status)
        container: dict[str, Any] | None = None
        package, image = version.tags.get(T.PACKAGE_URI), version.tags.get(T.PACKAGE_IMAGE)
        if package and image:  # the servable package registered with the version: what a deployment serves
            container = {"Image": image, **model_data(package)}
        elif self.config.inference_image_uri:  # a version registered before it had a package: its MLflow folder
            container = {"Image": self.config.inference_image_uri}
            if location.startswith("s3://"):
                container["ModelDataSource"] = {"S3DataSource": {
                    "S3Uri": location.rstrip("/") + "/", "S3DataType": "S3Prefix", "CompressionType": "None"}}
        if container is not None:
            request["InferenceSpecification"] = {
                "Containers": [container],
                "SupportedContentTypes": self.config.content_types,
                "SupportedResponseMIMETypes": self.config.response_types,
                "SupportedRealtimeInferenceInstanceTypes": self.config.inference_instance_types,
            }
        return str(self.client.create_model_package(**request)["ModelPackageArn"])

    def _update(self, package: dict[str, Any], status: str, description: str) -> None:
        self.client.update_model_package(
            ModelPackageArn=package["ModelPackageArn"], ModelApprovalStatus=status,
            ApprovalDescription=_truncate(description),
            # Sent back unchanged: an update that leaves them out must not lose the lineage.
            CustomerMetadataProperties=package.get("CustomerMetadataProperties") or {})

    def _metadata(self, version: RegisteredVersion, location: str) -> dict[str, str]:
        tags = version.tags
        values = {
            "mlflow.model": version.name, "mlflow.version": version.version, "mlflow.run_id": version.run_id,
            "genaiops.client_token": _client_token(version), "genaiops.gate": tags.get(T.GATE, ""),
            "genaiops.gate_digest": gate_digest(tags), "genaiops.dataset_hash": tags.get(T.DATASET_HASH, ""),
            "genaiops.base_model": tags.get(T.BASE_MODEL, ""), "genaiops.artifacts": location,
            "genaiops.package_digest": tags.get(T.PACKAGE_DIGEST, ""),
        }
        return {k: v[:MAX_METADATA_VALUE] for k, v in values.items() if v}

    @staticmethod
    def _description(tags: dict[str, str], status: str) -> str:
        if status == T.PENDING:
            return "Pending approval in the MLflow UI."
        who, when = tags.get(T.APPROVED_BY, "unknown"), tags.get(T.APPROVED_AT, "")
        note = tags.get(T.APPROVAL_NOTE, "")
        return f"{status} by {who} in MLflow" + (f" at {when}" if when else "") + (f". Note: {note}" if note else ".")


def model_data(uri: str) -> dict[str, Any]:
    """A container's model data: a `model.tar.gz` by URL, an uncompressed artifact (a prefix, as JumpStart's
    fine-tuned LLMs are) as an S3 prefix."""
    if uri.endswith("/"):
        return {"ModelDataSource": {"S3DataSource": {"S3Uri": uri, "S3DataType": "S3Prefix",
                                                     "CompressionType": "None"}}}
    return {"ModelDataUrl": uri}


def _client_token(version: RegisteredVersion) -> str:
    return hashlib.sha256(f"{version.name}/{version.version}/{version.run_id}".encode()).hexdigest()[:36]


def _modified_by(package: dict[str, Any]) -> str:
    who = package.get("LastModifiedBy") or {}
    return str(who.get("UserProfileName") or who.get("IamIdentity", {}).get("Arn") or "an unknown identity")


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"
