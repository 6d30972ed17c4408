"""Tags that cross layers: the approval and release protocol on MLflow model versions (tag names, statuses,
aliases; DESIGN.md), and the tags genaiops puts on SageMaker resources."""

from __future__ import annotations

from typing import Final, Literal

APPROVAL_STATUS: Final = "genaiops.approval_status"
APPROVED_BY: Final = "genaiops.approved_by"
APPROVAL_NOTE: Final = "genaiops.approval_note"
APPROVED_AT: Final = "genaiops.approved_at"  # stamped by the server with approved_by
APPROVAL_INVALID: Final = "genaiops.approval_invalid"  # why the watcher reverted an approval
RELEASE_REQUEST: Final = "genaiops.release_request"  # where the watcher filed the release request
GATE: Final = "genaiops.gate"
GATE_SUMMARY: Final = "genaiops.gate_summary"  # every check with its numbers
DATASET_HASH: Final = "genaiops.dataset_hash"
DATASET_SOURCE: Final = "genaiops.dataset_source"
DATASET_ROWS: Final = "genaiops.dataset_rows"  # train=…,validation=…,test=…
DATA_VALIDATION: Final = "genaiops.data_validation"  # the contract's one-line summary
BASE_MODEL: Final = "genaiops.base_model"
SOURCE_RUN: Final = "genaiops.source_run"
RUN_KEY: Final = "genaiops.run_key"  # dataset hash + config digest: one version per distinct input
TRIGGERED_BY: Final = "genaiops.triggered_by"
TRIGGER: Final = "genaiops.trigger"  # why the run started: manual, schedule, alarm, new-data, approval
TRIGGER_NAME: Final = "genaiops.trigger.name"  # the alarm, the data source, or who started it
TRIGGER_DETAIL: Final = "genaiops.trigger.detail"  # the alarm's reason, the data's content hash
COMPARED_CHAMPION: Final = "genaiops.compared_champion"  # the champion version the gate compared against
PACKAGE_URI: Final = "genaiops.package_uri"  # the servable model.tar.gz (or JumpStart artifact) of the version
PACKAGE_DIGEST: Final = "genaiops.package_digest"  # its SHA-256: the package is content-addressed
PACKAGE_IMAGE: Final = "genaiops.package_image"  # the inference container image that serves it
BUILD_SERVED: Final = "genaiops.build.served"  # the serving build the package loads (steps.optimize), or unoptimized
BUILD_SPEEDUP: Final = "genaiops.build.speedup"  # its output tokens/s over the unoptimized weights' at the re-gate
BUILDS: Final = "genaiops.builds"  # every build's re-gate: passed or failed and why, tokens/s, ROUGE-L delta
SM_MODEL_PACKAGE: Final = "genaiops.sagemaker.model_package"  # ARN of the mirrored SageMaker model package
SM_SYNCED_STATUS: Final = "genaiops.sagemaker.synced_status"  # the status both registries agreed on last
SM_STATUS_CHANGE: Final = "genaiops.sagemaker.status_change"  # a change made in SageMaker and what became of it

PENDING: Final = "PendingManualApproval"
APPROVED: Final = "Approved"
REJECTED: Final = "Rejected"
ApprovalStatus = Literal["PendingManualApproval", "Approved", "Rejected"]

CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"

# --- the release on a model version (written by the release account) ----------------------------------------

RELEASE_ENDPOINT: Final = "genaiops.release.endpoint"
RELEASE_STRATEGY: Final = "genaiops.release.strategy"
RELEASE_STATE: Final = "genaiops.release.state"
RELEASE_STARTED: Final = "genaiops.release.started"
RELEASE_FINISHED: Final = "genaiops.release.finished"
RELEASE_REASON: Final = "genaiops.release.reason"
RELEASE_PREVIOUS: Final = "genaiops.release.previous"  # the champion a promoted version replaced: the rollback target
RELEASE_AGAINST: Final = "genaiops.release.against"  # the variant the release met: the champion's (vN), or base

# --- SageMaker resource tags (models, endpoint configs, endpoints, model package groups) ---------------------

MODEL: Final = "genaiops:model"  # on a SageMaker model: the registered model it serves
VERSION: Final = "genaiops:version"  # on a SageMaker model: the registered version (N, base or candidate)
PACKAGE: Final = "genaiops:package-digest"  # on a SageMaker model: the SHA-256 of its package
BUILD: Final = "genaiops:build"  # on a SageMaker model: the serving build its package loads
ENDPOINT: Final = "genaiops:endpoint"  # on endpoints, endpoint configs and CloudWatch alarms: the endpoint
STRATEGY: Final = "genaiops:strategy"  # on an endpoint config: how it was deployed
EXPIRES_AT: Final = "genaiops:expires-at"  # on a temporary endpoint: when `genaiops endpoints gc` may delete it
PURPOSE: Final = "genaiops:purpose"  # on a temporary endpoint: what it is for (evaluation)
MLFLOW_MODEL: Final = "genaiops:mlflow-model"  # on a model package group: the MLflow registered model it mirrors
ALARMS_OWNER: Final = "genaiops:alarms"  # on an endpoint kept as code: "stack", the stack owns its alarms
STAGE: Final = "genaiops:stage"  # on every stack's resources: the stage (cost allocation)
STACK: Final = "genaiops:stack"  # on every stack's resources: the lifecycle stack (cost allocation)
