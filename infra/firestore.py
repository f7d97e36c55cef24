"""The pipeline's Firestore database: idempotency keys shared by every instance, and the dead-letter store.

Native mode, its own database (not the project's `(default)`), with point-in-time recovery and delete
protection from config, a TTL policy that deletes finished idempotency keys once expired, and
`roles/datastore.user` for the runtime account on this database only (an IAM condition on its name).
"""

from __future__ import annotations

import pulumi
import pulumi_gcp as gcp

from infra.identities import RUNTIME_DATABASE_ROLES
from infra.settings import PipelineSettings
from tasklane.core import firestore_names


def database_condition(settings: PipelineSettings) -> gcp.projects.IAMMemberConditionArgs:
    """Firestore checks IAM conditions on the database's resource name (Firestore docs, "IAM conditions")."""
    return gcp.projects.IAMMemberConditionArgs(
        title=f"only-{settings.firestore_database_id}",
        description="Firestore access limited to the Tasklane pipeline's own database.",
        expression=f'resource.name == "projects/{settings.project}/databases/{settings.firestore_database_id}"',
    )


def create_database(name: str, settings: PipelineSettings, runtime_member: pulumi.Input[str],
                    opts: pulumi.ResourceOptions) -> gcp.firestore.Database:
    database = gcp.firestore.Database(
        f"{name}-firestore",
        project=settings.project,
        name=settings.firestore_database_id,
        location_id=settings.firestore_location_id,
        type="FIRESTORE_NATIVE",
        concurrency_mode="PESSIMISTIC",  # transactions lock what they read: `begin` is one transaction
        point_in_time_recovery_enablement=("POINT_IN_TIME_RECOVERY_ENABLED" if settings.firestore_point_in_time_recovery
                                           else "POINT_IN_TIME_RECOVERY_DISABLED"),
        delete_protection_state=("DELETE_PROTECTION_ENABLED" if settings.firestore_delete_protection
                                 else "DELETE_PROTECTION_DISABLED"),
        # `pulumi destroy` deletes the database unless delete protection refuses it.
        deletion_policy="DELETE",
        opts=opts,
    )
    child = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[database]))
    gcp.firestore.Field(
        f"{name}-idempotency-ttl",
        project=settings.project,
        database=database.name,
        collection=firestore_names.IDEMPOTENCY_COLLECTION,
        field=firestore_names.EXPIRY_FIELD,
        ttl_config=gcp.firestore.FieldTtlConfigArgs(),
        # A TTL field needs no index; leaving the default single-field index off saves writes.
        index_config=gcp.firestore.FieldIndexConfigArgs(),
        opts=child,
    )
    for role in RUNTIME_DATABASE_ROLES:
        gcp.projects.IAMMember(
            f"{name}-runtime-{role.split('/')[1].replace('.', '-')}",
            project=settings.project,
            role=role,
            member=runtime_member,
            condition=database_condition(settings),
            opts=child,
        )
    return database
