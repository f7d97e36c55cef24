"""Enabling the Google APIs the pipeline uses."""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

REQUIRED_APIS = (
    "run.googleapis.com",
    "cloudtasks.googleapis.com",
    "artifactregistry.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "firestore.googleapis.com",
    "pubsub.googleapis.com",
    "logging.googleapis.com",
)


def enable_apis(name: str, project: str, parent: pulumi.Resource) -> list[gcp.projects.Service]:
    """One `projects.Service` per API, never disabled on destroy: other stacks in the project may use them."""
    return [
        gcp.projects.Service(
            f"{name}-api-{api.split('.')[0]}",
            project=project,
            service=api,
            disable_on_destroy=False,
            disable_dependent_services=False,
            opts=pulumi.ResourceOptions(parent=parent),
        )
        for api in REQUIRED_APIS
    ]
