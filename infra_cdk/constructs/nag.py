"""Acknowledging a cdk-nag finding: one rule (or one finding of a rule) on one construct, always with its reason."""

from __future__ import annotations

from collections.abc import Sequence

import aws_cdk as cdk
import jsii
from cdk_nag import NagPack
from constructs import IConstruct


def acknowledge(scope: IConstruct, **reasons: str) -> None:
    """`acknowledge(bucket, **{"AwsSolutions-S1": "why"})`: each rule id (or `Rule[Finding]`) with its reason.

    A finding names an unresolved partition, region or account as `<AWS::Partition>`, `<AWS::Region>`,
    `<AWS::AccountId>`, and a resolved one by its value: written with the placeholders, a finding id is made to
    match either way the stack's environment was given."""
    stack = cdk.Stack.of(scope)
    pseudo = {"<AWS::Partition>": stack.partition, "<AWS::Region>": stack.region, "<AWS::AccountId>": stack.account}
    for rule, reason in reasons.items():
        if len(reason.strip()) < 20:
            raise ValueError(f"acknowledging {rule} on {scope.node.path} needs a real reason, not {reason!r}")
        for placeholder, value in pseudo.items():
            if not cdk.Token.is_unresolved(value):
                rule = rule.replace(placeholder, value)
        cdk.Validations.of(scope).acknowledge(cdk.Acknowledgment(id=rule, reason=reason))


@jsii.implements(cdk.IPolicyValidationPlugin)
class ScopedChecks:
    """A cdk-nag pack run on some stacks only. A pack added with `Validations.of(...).add_plugins` walks the whole
    app whatever scope it was given; this one walks `scopes`."""

    def __init__(self, pack: NagPack, scopes: Sequence[IConstruct]) -> None:
        self._pack, self._scopes = pack, list(scopes)

    @property
    def name(self) -> str:
        return str(self._pack.name)

    @property
    def version(self) -> str | None:
        return self._pack.version

    @property
    def rule_ids(self) -> list[str] | None:
        return self._pack.rule_ids

    def validate(self, context: cdk.IPolicyValidationContext) -> cdk.PolicyValidationPluginReport:
        violations = [v for scope in self._scopes for v in self._pack.validate_scope(scope).violations]
        return cdk.PolicyValidationPluginReport(success=not violations, violations=violations)
