"""Names derived from content that several layers must agree on: SageMaker resource names, the release endpoint
of a model, its model package group, the deployment strategies and the base model's variant."""

from __future__ import annotations

import hashlib
import re
from typing import Final, Literal

Strategy = Literal["all_at_once", "ab", "shadow", "canary", "linear"]
STRATEGIES: Final[tuple[Strategy, ...]] = ("all_at_once", "ab", "shadow", "canary", "linear")
BASELINE: Final = "base"  # the version (and variant) name of the base model served as it is, before any champion
NAME_PATTERN: Final = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"  # SageMaker's endpoint, config, model and variant names


def resource_name(text: str) -> str:
    """A SageMaker resource name (63 characters of letters, digits and hyphens) from any text; a long one keeps a
    hash of the whole text, so two long texts do not meet."""
    cleaned = re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9-]", "-", text)).strip("-")
    if len(cleaned) > 63:
        cleaned = cleaned[:52].rstrip("-") + "-" + hashlib.sha256(text.encode()).hexdigest()[:10]
    return cleaned


def release_endpoint(model: str) -> str:
    """The endpoint a registered model is released to unless its config names one."""
    return re.sub(r"-+", "-", re.sub(r"[^a-zA-Z0-9-]", "-", model)).strip("-")[:63]


def package_group(model: str) -> str:
    """The SageMaker model package group that mirrors a registered model."""
    return model.replace("_", "-").replace(".", "-")


def strategy(name: str) -> Strategy:
    """A strategy named in a tag or a config, checked."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; one of {', '.join(STRATEGIES)}")
    return name


# The approval server's accounts by default (`approval` in a pipeline config may rename them): the flows' service
# accounts and the admin. The approvals stack makes one secret each; each flow role reads its own.
PIPELINE_ACCOUNT = "genaiops-pipeline"
WATCHER_ACCOUNT = "genaiops-watcher"
RELEASE_ACCOUNT = "genaiops-release"
FEEDBACK_ACCOUNT = "genaiops-feedback"
ADMIN_ACCOUNT = "admin"
