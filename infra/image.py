"""The handler's container image: an Artifact Registry repository and the image handler/Dockerfile builds."""

from __future__ import annotations

import os
from pathlib import Path

import pulumi
import pulumi_docker_build as docker_build
import pulumi_gcp as gcp

from infra.settings import PipelineSettings

# The image is built from the repository's root, so it can install the handler framework (framework/, core/) from
# the same checkout; the root's .dockerignore sends only those and handler/.
BUILD_ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = Path("handler") / "Dockerfile"


def create_repository(name: str, settings: PipelineSettings, opts: pulumi.ResourceOptions,
                      ) -> gcp.artifactregistry.Repository:
    """A Docker repository that keeps the newest `imageKeepCount` images and deletes older ones."""
    return gcp.artifactregistry.Repository(
        f"{name}-images",
        project=settings.project,
        location=settings.region,
        repository_id=settings.repository_id,
        format="DOCKER",
        description=f"Images of the Tasklane task handler ({settings.name}).",
        cleanup_policy_dry_run=False,
        cleanup_policies=[
            # KEEP wins over DELETE, so everything but the newest N versions is removed after a day.
            gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                id="delete-older-images",
                action="DELETE",
                condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                    tag_state="ANY", older_than="86400s"),
            ),
            gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                id="keep-newest-images",
                action="KEEP",
                most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                    keep_count=settings.image_keep_count),
            ),
        ],
        opts=opts,
    )


def build_handler_image(name: str, settings: PipelineSettings, repository: gcp.artifactregistry.Repository,
                        opts: pulumi.ResourceOptions, build_root: Path = BUILD_ROOT) -> docker_build.Image:
    """Build handler/Dockerfile for linux/amd64 and push it; the image's `ref` output carries the @sha256 digest.

    The push logs in through Docker's credential helper for the registry (`gcloud auth configure-docker
    REGION-docker.pkg.dev`, README "Deploying"; the deploy workflow runs it), not through `registries`: every
    input is kept in the stack's state, and an access token there could be decrypted by anyone who can preview
    the stack, the read-only previewer included. The context path is relative to the working directory so the
    same checkout gives the same inputs on a laptop and a CI runner.
    """
    registry_host = f"{settings.region}-docker.pkg.dev"
    tag = pulumi.Output.concat(registry_host, "/", settings.project, "/", repository.repository_id, "/handler:latest")
    return docker_build.Image(
        f"{name}-handler-image",
        context=docker_build.BuildContextArgs(location=os.path.relpath(build_root)),
        dockerfile=docker_build.DockerfileArgs(location=os.path.relpath(build_root / DOCKERFILE)),
        platforms=[docker_build.Platform.LINUX_AMD64],
        push=True,
        tags=[tag],
        opts=opts,
    )
