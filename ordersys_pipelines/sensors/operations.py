"""Operator alerts: one per failure, after its last attempt, saying what to do about it.

A failed run that Dagster will retry (tagged `dagster/will_retry=true`: its worker died and
dagster.yaml's run retries are left) is not reported; its last retry is. Such a run is tagged
`ordersys/alert=deferred`, and `operator_alert_on_missed_retry` reports it after all when no
retry of it appeared (the retry daemon could not launch one: its engine events say why). The message names the
failing steps with their causes and advises by kind of failure: a step that refused its input
(`failure_kind: data`, a rejected file or a refused refund) would fail the same way again, so the
advice is what to fix; a server that did not answer after every step retry, or an unexpected
error, is re-executed once it is mended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dagster as dg
from dagster._core.storage.tags import PARENT_RUN_ID_TAG

from ordersys_pipelines.domain.notifications.operator import notify_operator
from ordersys_pipelines.resources.notifier import NotifierResource
from ordersys_pipelines.step_retries import DATA_FAILURE, FAILURE_KIND

WILL_RETRY_TAG = "dagster/will_retry"
RETRIES_EXHAUSTED = "Exceeded max_retries"  # the message of a step that used up its RetryRequested
# On a failed run whose alert waits for its retry: deferred, then retried or sent.
ALERT_TAG = "ordersys/alert"
# Dagster's retry daemon launches a retry within seconds of the failure; a deferred run with no
# retry after this long has none coming.
RETRY_GRACE_SECONDS = 120


@dataclass(frozen=True)
class StepFailure:
    step: str
    cause: str
    kind: str  # data, transient or error
    metadata: dict


def retry_coming(run: dg.DagsterRun) -> bool:
    """Will Dagster's run retries launch another attempt? A run without a code location origin
    (run in-process by the CLI) is never retried, whatever its tag says."""
    return run.tags.get(WILL_RETRY_TAG) == "true" and run.remote_job_origin is not None


def _root_cause(error) -> str:
    # Dagster wraps the op's exception; the operator needs the original message.
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def step_failure(event: dg.DagsterEvent) -> StepFailure:
    data = event.event_specific_data
    user = data.user_failure_data if data else None
    metadata = {key: value.value for key, value in (user.metadata if user else {}).items()}
    if user is not None and metadata.get(FAILURE_KIND) == DATA_FAILURE:
        return StepFailure(event.step_key, (user.description or "").strip(), "data", metadata)
    error = data.error if data else None
    if error is None:
        return StepFailure(event.step_key, event.message or "failed", "error", metadata)
    kind = "transient" if error.message.startswith(RETRIES_EXHAUSTED) else "error"
    cause = (user.description or "").strip() if user is not None and user.description else _root_cause(error)
    return StepFailure(event.step_key, cause, kind, metadata)


def advice(run: dg.DagsterRun, failures: list[StepFailure]) -> list[str]:
    """What the operator does next; a re-execution only where it can succeed."""
    if failures and all(f.kind == "data" for f in failures):
        lines = ["The input was refused: a re-execution would fail the same way."]
        if run.tags.get("ordersys/stage") == "import" or any("file" in f.metadata for f in failures):
            files = ", ".join(sorted({str(f.metadata["file"]) for f in failures if "file" in f.metadata}))
            lines.append(f"Fix the file ({files or 'see the cause'}; its reason is beside it as .reason) and drop "
                         "the corrected file into the inbox: it is imported as a new partition.")
        elif run.job_name == "refund_request":
            lines.append("Request the refund again with corrected parameters (a new reference if the amount changes).")
        else:
            lines.append("Correct the data named above, then launch the job again.")
        return lines
    rerun = f"ordersys runs reexecute {run.run_id}"
    if any(f.kind == "transient" for f in failures):
        return ["A server did not answer after every step retry (ORDERSYS_STEP_RETRIES).",
                f"Once it answers again, re-execute from the failed steps: {rerun}"]
    return [f"Once the cause is mended, re-execute from the failed steps: {rerun}"]


def alert_text(run: dg.DagsterRun, failure_message: str, failures: list[StepFailure]) -> tuple[str, str]:
    subject = f"ordersys: run of {run.job_name} failed ({run.run_id[:8]})"
    subject_of_run = run.tags.get("dagster/partition") or run.tags.get("ordersys/file")
    if "dagster/asset_partition_range_start" in run.tags:
        subject_of_run = (f"{run.tags['dagster/asset_partition_range_start']}.."
                          f"{run.tags.get('dagster/asset_partition_range_end', '')}")
    body = [
        f"Job: {run.job_name}",
        f"Run: {run.run_id}",
        f"Stage: {run.tags.get('ordersys/stage', '-')}",
        *([f"Partition: {subject_of_run}"] if subject_of_run else []),
        f"Failure: {failure_message}",
        *(f"- step {f.step} ({f.kind}): {f.cause}" for f in failures),
        "",
        *advice(run, failures),
    ]
    return subject, "\n".join(body)


@dg.run_failure_sensor(
    name="operator_alert_on_failure",
    description="Tells the operator (ORDERSYS_OPERATOR_EMAIL, or the log) once about every failed run, "
    "after its last attempt: the failing steps' causes, and what to fix or how to re-execute it.",
    default_status=dg.DefaultSensorStatus.RUNNING,
    monitor_all_code_locations=False,
)
def operator_alert_on_failure(context: dg.RunFailureSensorContext, notifier: NotifierResource):
    run = context.dagster_run
    if retry_coming(run):
        context.instance.add_run_tags(run.run_id, {ALERT_TAG: "deferred"})
        return dg.SkipReason(f"run {run.run_id} will be retried ({WILL_RETRY_TAG}); its last attempt is reported")
    failures = [step_failure(event) for event in context.get_step_failure_events()]
    subject, body = alert_text(run, context.failure_event.message or "the run failed", failures)
    context.log.error(body)
    notify_operator(notifier, subject, body)
    return None


def _recorded_failure(instance: dg.DagsterInstance, run_id: str) -> tuple[str, list[StepFailure]]:
    """The run's failure message and failed steps, from its event log."""
    message, failures = "the run failed", []
    for entry in instance.all_logs(run_id, of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE}):
        event = entry.dagster_event
        if event.event_type == dg.DagsterEventType.RUN_FAILURE:
            message = event.message or message
        else:
            failures.append(step_failure(event))
    return message, failures


def missed_retries(instance: dg.DagsterInstance, now: float) -> list[dg.DagsterRun]:
    """Failed runs whose alert was deferred for a retry that never came: the retry daemon gave up
    (it sets `dagster/will_retry=false` after a failed launch) or nothing appeared within
    RETRY_GRACE_SECONDS. A deferred run whose retry exists is marked retried: that retry reports
    its own failure."""
    missed = []
    records = instance.get_run_records(
        dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE], tags={ALERT_TAG: "deferred"}), limit=100)
    for record in records:
        run = record.dagster_run
        if instance.get_runs(dg.RunsFilter(tags={PARENT_RUN_ID_TAG: run.run_id}), limit=1):
            instance.add_run_tags(run.run_id, {ALERT_TAG: "retried"})
            continue
        ended = record.end_time or record.update_timestamp.timestamp()
        if run.tags.get(WILL_RETRY_TAG) == "false" or now - ended >= RETRY_GRACE_SECONDS:
            missed.append(run)
    return missed


@dg.sensor(
    name="operator_alert_on_missed_retry",
    description="Tells the operator about a failed run whose alert waited for an automatic retry that was "
    "never launched (the retry daemon could not start it), so no failure goes unreported.",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def operator_alert_on_missed_retry(context: dg.SensorEvaluationContext, notifier: NotifierResource):
    missed = missed_retries(context.instance, time.time())
    for run in missed:
        message, failures = _recorded_failure(context.instance, run.run_id)
        subject, body = alert_text(run, message, failures)
        body = ("Its automatic retry was not launched (the run's engine events in the UI say why).\n\n" + body)
        context.log.error(body)
        notify_operator(notifier, subject, body)
        context.instance.add_run_tags(run.run_id, {ALERT_TAG: "sent"})
    if not missed:
        return dg.SkipReason("no failed run waits for a retry that did not come")
    return None
