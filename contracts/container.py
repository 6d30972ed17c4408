"""The environment a model's container reads, as SageMaker's inference containers read theirs: set on a SageMaker
model (`PrimaryContainer.Environment`) by whoever creates it, honoured by the server that runs the package."""

from __future__ import annotations

from typing import Final

TIMEOUT: Final = "SAGEMAKER_MODEL_SERVER_TIMEOUT"  # seconds a request may take before the caller gets a ModelError
MAX_BATCH_SIZE: Final = "MAX_BATCH_SIZE"  # requests batched into one generate call
SHADOW_SHARE: Final = "SHADOW_SHARE_WHILE_BUSY"  # a shadow on a shared machine: its share of the time while
#                                                  production has requests in flight (0 to 1)
