"""Construct ids from names, and the logical id cdk-nag names a resource by."""

from __future__ import annotations

import re

import aws_cdk as cdk
from constructs import IConstruct


def pascal(name: str) -> str:
    """`summarizer-pinned/v1/5xx-rate` → `SummarizerPinnedV15xxRate`: a construct id from a resource's name."""
    return "".join(part.title() for part in re.split(r"[^A-Za-z0-9]+", name) if part)


def logical_id(construct: IConstruct) -> str:
    """The logical id of an L2 construct's resource in its stack (as a cdk-nag finding writes `<id>` or `<id.Arn>`)."""
    child = construct.node.default_child
    assert isinstance(child, cdk.CfnElement)
    return cdk.Stack.of(child).get_logical_id(child)
