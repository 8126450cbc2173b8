"""`import_run_ended_sensor`: a file whose import run ended without finishing it is marked failed.

The asset marks its file failed itself when the import raises. A run that never got there — its
process killed (run monitoring then fails the run), or the run canceled — would leave the file
`importing` (or `staged`, between the merge steps on SQLite) for good; this sensor marks it
failed with the run's failure message, so `ordersys status` and `ordersys imports show` say what
happened. The committed chunks (and merge steps) stay: a rerun of the partition resumes after them.
"""

# No `from __future__ import annotations`: Dagster reads the resource annotations.
import dagster as dg

from ordersys_pipelines.domain.failures import one_line
from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.sensors.workflow import is_import_run


def _import_run_ended_sensor(name: str, status: dg.DagsterRunStatus, how: str) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        name=name,
        run_status=status,
        monitor_all_code_locations=False,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Marks failed the file of an orders import run that {how} before it could.",
    )
    def import_run_ended(context: dg.RunStatusSensorContext, database: DatabaseResource):
        run = context.dagster_run
        if not is_import_run(run):
            return dg.SkipReason(f"run {run.run_id} ({run.job_name}) is not an orders import")
        message = one_line(context.dagster_event.message or "") or "no message"
        # Here, not at the top: the importer brings pyarrow and numpy, which only an import needs.
        from ordersys_pipelines.domain.imports.importer import mark_run_failed

        mark_run_failed(database.engine, run.run_id, f"the import run {how}: {message}")
        return None

    return import_run_ended


import_run_failed_sensor = _import_run_ended_sensor("import_run_failed_sensor", dg.DagsterRunStatus.FAILURE, "failed")
import_run_canceled_sensor = _import_run_ended_sensor("import_run_canceled_sensor", dg.DagsterRunStatus.CANCELED,
                                                      "was canceled")
