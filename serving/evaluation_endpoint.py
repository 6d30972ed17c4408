"""The temporary evaluation endpoint of the aws backend: a candidate and its base model served side by side
(production variants `candidate` and `base`), for exactly as long as the evaluation stage runs.

It is deployed through the same deployer as any release, tagged with the time it expires, and deleted
(endpoint, endpoint config, models) when the stage ends, whatever ended it. A run killed before its clean-up
leaves an endpoint whose tag says it has expired: `genaiops endpoints gc` deletes those (cost pillar).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from contracts.tags import EXPIRES_AT, PURPOSE
from serving.deployer import SageMakerDeployer, Version

log = logging.getLogger(__name__)



@contextmanager
def evaluation_endpoint(deployer: SageMakerDeployer, name: str, candidate: Version, base: Version, *,
                        ttl_s: int, now: datetime | None = None) -> Iterator[str]:
    """Serve `candidate` and `base` on endpoint `name` (variants `candidate` and `base`) inside the block."""
    if (candidate.variant, base.variant) != ("candidate", "base"):
        raise ValueError(f"an evaluation endpoint serves the variants candidate and base, not "
                         f"{candidate.variant} and {base.variant}")
    expires = (now or datetime.now(UTC)) + timedelta(seconds=ttl_s)
    try:
        deployer.deploy(name, candidate, "ab", champion=base,
                        tags={EXPIRES_AT: expires.isoformat(timespec="seconds"), PURPOSE: "evaluation"})
        yield name
    finally:
        try:
            deployer.remove(name)
        except Exception:  # the stage's own error matters more; the expiry tag lets gc finish the job
            log.exception("could not delete the evaluation endpoint %s; `genaiops endpoints gc` deletes it after %s",
                          name, expires.isoformat(timespec="seconds"))


def expired(client: Any, now: datetime | None = None) -> list[tuple[str, str]]:
    """Endpoints whose `genaiops:expires-at` tag has passed: (name, expiry)."""
    now = now or datetime.now(UTC)
    found = []
    for page in client.get_paginator("list_endpoints").paginate():
        for summary in page["Endpoints"]:
            tags = {t["Key"]: t["Value"] for t in client.list_tags(ResourceArn=summary["EndpointArn"]).get("Tags", [])}
            stamp = tags.get(EXPIRES_AT)
            if stamp and datetime.fromisoformat(stamp) <= now:
                found.append((summary["EndpointName"], stamp))
    return found


def collect(deployer: SageMakerDeployer, now: datetime | None = None) -> list[str]:
    """Delete every expired endpoint with its config and models; returns what was deleted."""
    removed: list[str] = []
    for name, stamp in expired(deployer.client, now):
        log.info("%s expired at %s: deleting it", name, stamp)
        removed.extend(deployer.remove(name))
    return removed
