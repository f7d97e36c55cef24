"""`TaskPipeline`: one Cloud Tasks queue delivering authenticated tasks to one private Cloud Run service.

Everything the pipeline needs is declared inside this component, grouped by purpose (API enablement,
image, identities, service, queue, Firestore, access, routing of unseen failures, observability), so a
second pipeline is a few lines:

    reports = TaskPipeline("reports", dataclasses.replace(settings, name="tasklane-reports"))
"""

from __future__ import annotations

from pathlib import Path

import pulumi
import pulumi_gcp as gcp

from infra.access import grant_access
from infra.apis import enable_apis
from infra.firestore import create_database
from infra.identities import create_identities
from infra.image import BUILD_ROOT, build_handler_image, create_repository
from infra.observability import create_alerts, create_dashboard, create_log_metrics
from infra.queue import create_queue, queue_path
from infra.service import create_service, default_task_audience
from infra.settings import PipelineSettings, format_duration
from infra.unseen_failures import route_final_failures

COMPONENT_TYPE = "tasklane:index:TaskPipeline"


class TaskPipeline(pulumi.ComponentResource):
    service_url: pulumi.Output[str]
    queue_path: pulumi.Output[str]
    invoker_service_account: pulumi.Output[str]
    task_audience: pulumi.Output[str]
    image_ref: pulumi.Output[str]
    firestore_database: pulumi.Output[str]
    dashboard_url: pulumi.Output[str]

    def __init__(self, name: str, settings: PipelineSettings, opts: pulumi.ResourceOptions | None = None,
                 build_root: Path = BUILD_ROOT) -> None:
        super().__init__(COMPONENT_TYPE, name, None, opts)
        apis = enable_apis(name, settings.project, parent=self)
        # Enabling an API is eventually consistent: everything else waits for all of them.
        child = pulumi.ResourceOptions(parent=self, depends_on=apis)

        identities = create_identities(name, settings, child)
        repository = create_repository(name, settings, child)
        image = build_handler_image(name, settings, repository, child, build_root=build_root)
        queue = create_queue(name, settings, child)
        database = create_database(name, settings, identities.runtime.member, child)

        project_number = gcp.organizations.get_project_output(project_id=settings.project).number
        task_audience = (pulumi.Output.from_input(settings.custom_audience) if settings.custom_audience
                         else default_task_audience(settings, project_number))
        path = queue_path(settings, queue)
        service = create_service(
            name, settings,
            image_ref=image.ref,
            runtime_account_email=identities.runtime.email,
            invoker_account_email=identities.invoker.email,
            task_audience=task_audience,
            queue_path=path,
            firestore_database=database.name,
            push_account_email=identities.push.email,
            opts=child,
        )
        grant_access(name, settings, identities=identities, service=service, queue=queue, opts=child)
        route_final_failures(name, settings, queue=queue, service=service, push_account=identities.push,
                             task_audience=task_audience, opts=child)
        metrics = create_log_metrics(name, settings, child)
        _, dashboard_url = create_dashboard(name, settings, queue, child)
        create_alerts(name, settings, queue, metrics, child)

        self.service_url = service.uri
        self.queue_path = path
        self.invoker_service_account = identities.invoker.email
        self.task_audience = task_audience
        self.image_ref = image.ref
        self.firestore_database = database.name
        self.dashboard_url = dashboard_url
        self.task_dispatch_deadline = format_duration(settings.task_dispatch_deadline_seconds)
        self.register_outputs({
            "service_url": self.service_url,
            "queue_path": self.queue_path,
            "invoker_service_account": self.invoker_service_account,
            "task_audience": self.task_audience,
            "image_ref": self.image_ref,
            "firestore_database": self.firestore_database,
            "dashboard_url": self.dashboard_url,
        })
