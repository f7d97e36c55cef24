"""Guardrails as code: a Pulumi policy pack that stops an unsafe stack before it reaches Google Cloud."""
