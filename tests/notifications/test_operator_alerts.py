"""A failed run reaches the operator through the notification channel (a real SMTP server)."""

from __future__ import annotations

import dagster as dg

from ordersys_pipelines.resources.notifier import NotifierResource
from ordersys_pipelines.sensors.operations import operator_alert_on_failure


@dg.op
def explode() -> None:
    raise RuntimeError("payment gateway unreachable")


@dg.job(tags={"ordersys/stage": "settlement"})
def failing_job() -> None:
    explode()


def test_failed_run_is_mailed_to_the_operator(smtp_server):
    instance = dg.DagsterInstance.ephemeral()
    result = failing_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    notifier = NotifierResource(
        channel="email", smtp_host="127.0.0.1", smtp_port=smtp_server.port, operator_email="ops@example.com"
    )
    failure_event = result.get_run_failure_event()
    with dg.build_run_status_sensor_context(
        sensor_name="operator_alert_on_failure",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=failure_event,
        resources={"notifier": notifier},
    ) as context:
        operator_alert_on_failure(context.for_run_failure())

    [message] = smtp_server.messages
    assert "<ops@example.com>" in message["To"]
    assert f"failing_job failed ({result.run_id[:8]})" in message["Subject"]
    body = message.get_content()
    assert "payment gateway unreachable" in body
    assert f"ordersys runs reexecute {result.run_id}" in body
    assert "Stage: settlement" in body
