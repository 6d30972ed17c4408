"""SageMaker instance types: which ones take a KMS key for their storage volume, and what an hour of one costs."""

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


# On-demand price per hour (USD) of SageMaker real-time inference instances in us-east-1, approximate list prices:
# what the cost per 1,000 output tokens is computed from. Regions and agreements differ, so
# `deployment.hourly_price_usd` overrides it; an instance type not listed has no cost shown until it is set.
HOURLY_PRICE_USD: dict[str, float] = {
    "ml.t2.medium": 0.056, "ml.t3.medium": 0.05,
    "ml.m5.large": 0.134, "ml.m5.xlarge": 0.269, "ml.m5.2xlarge": 0.538, "ml.m5.4xlarge": 1.075,
    "ml.c5.large": 0.119, "ml.c5.xlarge": 0.238, "ml.c5.2xlarge": 0.476, "ml.c5.4xlarge": 0.952,
    "ml.g4dn.xlarge": 0.736, "ml.g4dn.2xlarge": 1.053,
    "ml.g5.xlarge": 1.408, "ml.g5.2xlarge": 1.515, "ml.g5.4xlarge": 2.03, "ml.g5.12xlarge": 7.09,
    "ml.inf2.xlarge": 0.99, "ml.p4d.24xlarge": 37.69,
}


def hourly_price(instance_type: str, override: float | None = None) -> float | None:
    """The price per instance-hour: the override when set, else the table's (None: not known)."""
    return override if override is not None else HOURLY_PRICE_USD.get(instance_type)


def cost_per_1k_tokens(price_per_hour: float, tokens_per_s: float) -> float | None:
    """What 1,000 generated tokens cost on an instance that generates `tokens_per_s` (None without throughput)."""
    if tokens_per_s <= 0:
        return None
    return price_per_hour / 3600.0 / tokens_per_s * 1000.0
