"""The aws trainer: fine-tune a SageMaker JumpStart model with a training job (sagemaker SDK 3).

The prepared splits go to S3 in the layout JumpStart's instruction-tuning scripts read: a
channel folder with a JSON Lines file of `prompt`/`completion` records and a `template.json`
that maps them. Hyperparameters are mapped from the same `FinetuneConfig` the local trainer
uses, by the names the model's JumpStart spec declares. The result is the fine-tuned job's
model artifact, never the base model's, with the JumpStart inference image that serves it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from contracts.instances import has_local_storage
from steps.artifacts import ArtifactStore
from steps.data import Example, PreparedDataset
from steps.finetune import FinetuneConfig, FinetuneError, MetricsCallback, TrainedModel

log = logging.getLogger(__name__)

TEMPLATE = {"prompt": "{prompt}", "completion": " {completion}"}
# Our key -> the names JumpStart scripts use for it, first one the spec declares wins.
HYPERPARAMETER_NAMES: dict[str, tuple[str, ...]] = {
    "epochs": ("epoch", "epochs", "num_train_epochs"),
    "learning_rate": ("learning_rate", "lr"),
    "lora.r": ("lora_r",),
    "lora.alpha": ("lora_alpha",),
    "lora.dropout": ("lora_dropout",),
    "batch_size": ("per_device_train_batch_size", "batch_size"),
    "gradient_accumulation_steps": ("gradient_accumulation_steps",),
    "max_seq_len": ("max_input_length", "max_seq_length"),
    "seed": ("seed",),
}


class JumpStartTrainer:
    """Runs the fine-tuning as a SageMaker training job of a JumpStart model."""

    def __init__(self, *, store: ArtifactStore, sagemaker_session: Any, role_arn: str, output_s3_uri: str,
                 kms_key_id: str | None = None, subnets: Sequence[str] = (), security_group_ids: Sequence[str] = (),
                 wait: bool = True) -> None:
        if bool(subnets) != bool(security_group_ids):
            raise FinetuneError("a VPC for training needs both subnets and security groups, or neither")
        self.store, self.session, self.role_arn = store, sagemaker_session, role_arn
        self.output_s3_uri = output_s3_uri.rstrip("/")
        self.kms_key_id, self.subnets, self.security_group_ids = kms_key_id, list(subnets), list(security_group_ids)
        self.wait = wait

    def train(self, dataset: PreparedDataset, config: FinetuneConfig,
              on_metrics: MetricsCallback | None = None) -> TrainedModel:
        from sagemaker.core.jumpstart import JumpStartConfig
        from sagemaker.core.jumpstart.document import get_hub_content_and_document

        js = config.jumpstart
        if not dataset.splits["train"]:
            raise FinetuneError("finetune: the dataset has no training rows")
        jumpstart_config = JumpStartConfig(model_id=js.model_id, model_version=js.model_version,
                                           accept_eula=js.accept_eula)
        _, spec = get_hub_content_and_document(jumpstart_config=jumpstart_config, sagemaker_session=self.session)
        check_spec(spec, config)
        image = _regional(str(spec.HostingEcrUri or ""), self.session.boto_region_name)
        base_artifact = _regional_bucket(str(getattr(spec, "HostingArtifactUri", "") or ""),
                                         self.session.boto_region_name)
        hyperparameters = map_hyperparameters(config, [h.Name for h in spec.Hyperparameters or []])

        prefix = f"jumpstart/{dataset.hash[:16]}"
        channels = {"training": self._upload(f"{prefix}/training", "train.jsonl", dataset.splits["train"])}
        if dataset.splits["validation"]:
            channels["validation"] = self._upload(f"{prefix}/validation", "validation.jsonl",
                                                  dataset.splits["validation"])
        log.info("training %s on %d x %s (%s), at most %d s of run time%s", js.model_id, js.instance_count,
                 js.instance_type, "spot" if js.spot else "on demand", js.max_run_seconds,
                 f", {self._max_wait(config)} s of wait" if js.spot else "")
        trainer = self._model_trainer(jumpstart_config, config, channels, hyperparameters, dataset.hash)
        trainer.train(wait=self.wait, logs=False)
        return self._result(trainer, config, dataset, channels, image, base_artifact)

    def _upload(self, prefix: str, name: str, examples: Sequence[Example]) -> str:
        body = "".join(json.dumps({"prompt": e.prompt, "completion": e.target}, ensure_ascii=False) + "\n"
                       for e in examples)
        self.store.put(f"{prefix}/{name}", body.encode("utf-8"))
        self.store.put(f"{prefix}/template.json", json.dumps(TEMPLATE).encode("utf-8"))
        return self.store.uri(prefix) + "/"

    def _max_wait(self, config: FinetuneConfig) -> int:
        js = config.jumpstart
        return js.max_wait_seconds or 2 * js.max_run_seconds

    def _model_trainer(self, jumpstart_config: Any, config: FinetuneConfig, channels: dict[str, str],
                       hyperparameters: dict[str, str], dataset_hash: str) -> Any:
        from sagemaker.train import ModelTrainer
        from sagemaker.train.configs import (
            CheckpointConfig,
            Compute,
            InputData,
            Networking,
            OutputDataConfig,
            StoppingCondition,
        )

        js = config.jumpstart
        networking = None
        if self.subnets:
            networking = Networking(subnets=self.subnets, security_group_ids=self.security_group_ids,
                                    enable_inter_container_traffic_encryption=True)
        job_name = f"{js.model_id[:40]}-{dataset_hash[:8]}".replace(".", "-")
        return ModelTrainer.from_jumpstart_config(
            jumpstart_config=jumpstart_config,
            compute=Compute(instance_type=js.instance_type, instance_count=js.instance_count,
                            volume_size_in_gb=js.volume_size_gb,
                            # a local NVMe volume is encrypted by its hardware; SageMaker refuses a key for it
                            volume_kms_key_id=None if has_local_storage(js.instance_type) else self.kms_key_id,
                            enable_managed_spot_training=js.spot or None),
            networking=networking,
            stopping_condition=StoppingCondition(max_runtime_in_seconds=js.max_run_seconds,
                                                 max_wait_time_in_seconds=self._max_wait(config) if js.spot else None),
            output_data_config=OutputDataConfig(s3_output_path=f"{self.output_s3_uri}/training-jobs",
                                                kms_key_id=self.kms_key_id),
            checkpoint_config=CheckpointConfig(s3_uri=f"{self.output_s3_uri}/checkpoints/{job_name}")
            if js.spot else None,
            input_data_config=[InputData(channel_name=name, data_source=uri) for name, uri in channels.items()],
            hyperparameters=hyperparameters,
            sagemaker_session=self.session,
            role=self.role_arn,
            base_job_name=job_name,
        )

    def _result(self, trainer: Any, config: FinetuneConfig, dataset: PreparedDataset,
                channels: dict[str, str], image: str, base_artifact: str = "") -> TrainedModel:
        js = config.jumpstart
        job = trainer._latest_training_job  # the SDK's handle on the job it just ran
        name = job.training_job_name
        described = self.session.sagemaker_client.describe_training_job(TrainingJobName=name)
        status = described["TrainingJobStatus"]
        if status != "Completed":
            raise RuntimeError(f"training job {name} ended {status}: {described.get('FailureReason', 'no reason given')}")
        artifact = described["ModelArtifacts"]["S3ModelArtifacts"]
        metrics = {
            "instance_count": float(js.instance_count),
            "max_run_seconds": float(js.max_run_seconds),
            "spot": float(js.spot),
            "billable_seconds": float(described.get("BillableTimeInSeconds") or 0),
            **{m["MetricName"]: float(m["Value"]) for m in described.get("FinalMetricDataList", [])},
        }
        log.info("training job %s completed: %s", name, artifact)
        return TrainedModel(
            path=artifact, kind="full", base_model=f"jumpstart:{js.model_id}", base_model_path="", metrics=metrics,
            lineage={"training_job": name, "training_job_arn": described.get("TrainingJobArn", ""),
                     "instance_type": js.instance_type, "dataset_hash": dataset.hash, "trainer": "jumpstart",
                     "inference_image": image, "base_artifact": base_artifact,
                     **{f"channel_{k}": v for k, v in channels.items()}},
        )


def check_spec(spec: Any, config: FinetuneConfig) -> None:
    """Whether the JumpStart spec allows this fine-tuning: trainable, on this instance type, EULA, hyperparameters."""
    js = config.jumpstart
    if not spec.TrainingSupported:
        raise FinetuneError(f"finetune.jumpstart.model_id: {js.model_id} cannot be fine-tuned on JumpStart")
    supported = list(spec.SupportedTrainingInstanceTypes or [])
    if supported and js.instance_type not in supported:
        raise FinetuneError(f"finetune.jumpstart.instance_type: {js.instance_type} is not supported for "
                            f"{js.model_id}; allowed: {', '.join(supported)}")
    if spec.GatedBucket and not js.accept_eula:
        raise FinetuneError(f"finetune.jumpstart.accept_eula: {js.model_id} is a gated model; read its EULA "
                            f"({spec.HostingEulaUri or 'see the model card'}) and set accept_eula: true")
    names = {h.Name for h in spec.Hyperparameters or []}
    unknown = sorted(set(js.hyperparameters) - names)
    if unknown:
        raise FinetuneError(f"finetune.jumpstart.hyperparameters: {unknown} are not hyperparameters of "
                            f"{js.model_id}; allowed: {sorted(n for n in names if not n.startswith('sagemaker_'))}")
    if config.method == "full" and "peft_type" not in names:
        raise FinetuneError(f"finetune.method: full fine-tuning is not offered by {js.model_id} on JumpStart "
                            "(its script trains LoRA adapters); use method: lora")


def _regional(image: str, region: str) -> str:
    """JumpStart's hosting image for `region` (the spec names it in the region it was read from)."""
    import re

    return re.sub(r"\.dkr\.ecr\.[a-z0-9-]+\.", f".dkr.ecr.{region}.", image) if image and region else image


def _regional_bucket(uri: str, region: str) -> str:
    """JumpStart's hosting artifact in `region`'s cache bucket (the spec names the one it was read from)."""
    import re

    return re.sub(r"^s3://jumpstart-cache-prod-[a-z0-9-]+/", f"s3://jumpstart-cache-prod-{region}/", uri) \
        if uri and region else uri


def map_hyperparameters(config: FinetuneConfig, declared: Sequence[str]) -> dict[str, str]:
    """Our fine-tuning settings under the names the JumpStart spec declares, plus pass-through values."""
    values: dict[str, Any] = {
        "epochs": config.epochs or 1,
        "learning_rate": config.learning_rate,
        "lora.r": config.lora.r,
        "lora.alpha": config.lora.alpha,
        "lora.dropout": config.lora.dropout,
        "batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "max_seq_len": config.max_seq_len,
        "seed": config.seed,
    }
    names = set(declared)
    mapped: dict[str, str] = {}
    for key, candidates in HYPERPARAMETER_NAMES.items():
        name = next((c for c in candidates if c in names), None)
        if name is not None:
            mapped[name] = str(int(values[key]) if key == "epochs" and float(values[key]).is_integer() else values[key])
    if "instruction_tuned" in names:
        mapped["instruction_tuned"] = "True"  # prompt/completion records with template.json
    if "chat_dataset" in names:
        mapped["chat_dataset"] = "False"
    if "peft_type" in names:
        mapped["peft_type"] = "lora" if config.method == "lora" else "none"
    mapped.update(config.jumpstart.hyperparameters)
    return mapped
