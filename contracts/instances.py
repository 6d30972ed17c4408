"""SageMaker instance types: which ones take a KMS key for their storage volume."""

from __future__ import annotations

# Instance families whose local NVMe storage is encrypted by the instance's hardware: SageMaker refuses a KMS key
# for their volume (`KmsKeyId` of an endpoint config, `VolumeKmsKeyId` of a training job). The deployer, the
# JumpStart trainer and the CDK's GuardedEndpoint read it from here.
LOCAL_STORAGE_FAMILIES = frozenset({"c5d", "c6gd", "c6id", "g4dn", "g5", "g6", "g6e", "gr6", "m5d", "m6gd", "m6id",
                                    "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "r5d", "r6gd", "r6id", "trn1", "trn1n"})


def has_local_storage(instance_type: str) -> bool:
    """`ml.g5.xlarge` → True: its volume is encrypted by the hardware, and SageMaker takes no KMS key for it."""
    parts = instance_type.split(".")
    return len(parts) == 3 and parts[1] in LOCAL_STORAGE_FAMILIES
