"""Operator alerts: every failed run is logged and reported through the notification channel."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.domain.notifications.operator import notify_operator
from ordersys_pipelines.resources.notifier import NotifierResource


@dg.run_failure_sensor(
    name="operator_alert_on_failure",
    description="Tells the operator (ORDERSYS_OPERATOR_EMAIL, or the log) about every failed run, "
    "with the failing step's error and how to re-execute it.",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
)
def operator_alert_on_failure(context: dg.RunFailureSensorContext, notifier: NotifierResource) -> None:
    run = context.dagster_run
    errors = [
        f"- step {event.step_key}: {_root_cause(event.event_specific_data.error)}"
        for event in context.get_step_failure_events()
        if event.event_specific_data and event.event_specific_data.error
    ]
    failure = context.failure_event.message or "the run failed"
    subject = f"ordersys: run of {run.job_name} failed ({run.run_id[:8]})"
    body = "\n".join(
        [
            f"Job: {run.job_name}",
            f"Run: {run.run_id}",
            f"Stage: {run.tags.get('ordersys/stage', '-')}",
            f"Failure: {failure}",
            *errors,
            "",
            f"Re-execute from the failed steps: ordersys runs reexecute {run.run_id}",
        ]
    )
    context.log.error(body)
    notify_operator(notifier, subject, body)


def _root_cause(error) -> str:
    # Dagster wraps the op's exception; the operator needs the original message.
    while error.cause is not None:
        error = error.cause
    return error.message.strip()

