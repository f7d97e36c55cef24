"""The stack: settings from config, one `TaskPipeline`, and the outputs producers need."""

from __future__ import annotations

import pulumi

from infra.pipeline import TaskPipeline
from infra.settings import load_settings, retry_window_warning


def main() -> TaskPipeline:
    settings = load_settings()
    warning = retry_window_warning(settings)
    if warning:
        pulumi.log.warn(warning)
    pipeline = TaskPipeline(settings.name, settings)
    pulumi.export("service_url", pipeline.service_url)
    pulumi.export("queue_path", pipeline.queue_path)
    pulumi.export("invoker_service_account", pipeline.invoker_service_account)
    pulumi.export("task_audience", pipeline.task_audience)
    pulumi.export("image_ref", pipeline.image_ref)
    pulumi.export("firestore_database", pipeline.firestore_database)
    pulumi.export("dashboard_url", pipeline.dashboard_url)
    pulumi.export("task_dispatch_deadline", pipeline.task_dispatch_deadline)
    pulumi.export("region", settings.region)
    pulumi.export("project", settings.project)
    return pipeline
