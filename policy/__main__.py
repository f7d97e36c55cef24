"""The policy pack `pulumi preview/up --policy-pack policy` runs: every rule of rules.py, mandatory.

It needs its own environment (policy/requirements.txt): pulumi-policy pins an older protobuf than the
rest of the project uses. Pulumi creates it from PulumiPolicy.yaml.
"""

from pulumi_policy import (
    EnforcementLevel,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from rules import RULES, STACK_RULES, Rule, StackRule, stack_of


def _validator(rule: Rule):  # type: ignore[no-untyped-def]
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in rule.check(args.resource_type, args.props, stack_of(args.urn)):
            report_violation(message, args.urn)
    return validate


def _stack_validator(rule: StackRule):  # type: ignore[no-untyped-def]
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        if not args.resources:
            return
        resources = [(resource.resource_type, resource.props) for resource in args.resources]
        for message in rule.check(resources, stack_of(args.resources[0].urn)):
            report_violation(message)
    return validate


PolicyPack(
    name="tasklane-guardrails",
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=[ResourceValidationPolicy(name=rule.name, description=rule.description, validate=_validator(rule))
              for rule in RULES]
    + [StackValidationPolicy(name=rule.name, description=rule.description, validate=_stack_validator(rule))
       for rule in STACK_RULES],
)
