"""The Celery app of the step workers: dagster-celery's step task, configured like the executor.

    celery -A ordersys_pipelines.celery_worker worker -Q "$ORDERSYS_CELERY_QUEUE"

(`make workers N=2` runs this; see docs/celery.md). A worker needs the same environment as the
code location: ORDERSYS_* (the database the steps write to) and DAGSTER_PG_URL (the instance
storage the steps' events go to).
"""

from __future__ import annotations

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

# Imported here, before the pool processes fork, so each step finds the code location loaded
# (a step starts in a fraction of a second instead of re-importing Dagster and every job).
import ordersys_pipelines.definitions  # noqa: F401
from ordersys_pipelines.executors import celery_config
from ordersys_pipelines.settings import get_settings

app = make_app(CeleryExecutor.for_cli(**celery_config(get_settings())).app_args())
execute_plan = create_task(app)
