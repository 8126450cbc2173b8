"""Where the jobs' steps run, chosen by ORDERSYS_EXECUTOR, with no code change.

- `in_process` (default): every step runs in the run's own worker process, one after the other.
  Every job here is one or two steps in sequence, so a process per step buys no parallelism and
  costs seconds per step (measured in bench/latency_bench.py: step start and between-steps went
  from 11–28 s to about 1 s per run under load). A hung run is still caught: run monitoring
  (dagster.yaml, `max_runtime_seconds`) fails a run that runs too long, and its claims lapse.
- `multiprocess`: Dagster's default executor; each step is a child process of the run's own
  worker process.
- `celery`: dagster-celery's executor. The run's process puts each step as a task on the Celery
  queue ORDERSYS_CELERY_QUEUE at the broker ORDERSYS_CELERY_BROKER (RabbitMQ); any worker
  started with `make workers` (`celery -A ordersys_pipelines.celery_worker worker`) runs it and
  writes its events to the instance's PostgreSQL storage. Steps hand nothing to each other but
  through the database (the jobs' dependencies carry `Nothing`), so no filesystem is shared.

Results come back over the broker (`rpc://`): a task's reply is a message to the run's process,
nothing is kept on disk. A worker that dies mid-step loses nothing: tasks are acknowledged
only when they finish (`task_acks_late`), so RabbitMQ hands an unfinished task to another worker
as soon as the dead worker's connection closes (`task_reject_on_worker_lost` does the same when
only a pool process dies). The redelivered step runs again in the same run, with the same run
id: a transaction the first attempt had open was rolled back, and the payment initiation takes
the reserved orders its run holds first, so nothing waits for a lease (docs/celery.md).

Asset jobs (imports, catalog, analytics) never go to Celery (imports read their files from the
inbox on the run's machine): they run in-process, or multiprocess when that is chosen
(`default_executor`). The executors are chosen when the Definitions are built
(`with_op_executor`, `default_executor`), from the settings read then.
"""

from __future__ import annotations

import warnings

import dagster as dg

from ordersys_pipelines.settings import Settings


def celery_config(settings: Settings) -> dict:
    """The executor's config; the workers' Celery app (celery_worker.py) is built from the same."""
    return {
        "broker": settings.celery_broker,
        "backend": settings.celery_backend,
        "config_source": {
            "task_default_queue": settings.celery_queue,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            # One task at a time per pool process: a waiting task stays on the broker, where a
            # free worker can take it, rather than queued behind a long step.
            "worker_prefetch_multiplier": 1,
            "broker_connection_retry_on_startup": True,
            # Dagster's console log lines of a step are its stderr: INFO in the worker's log, not
            # Celery's default WARNING for redirected output.
            "worker_redirect_stdouts_level": "INFO",
        },
    }


def default_executor(settings: Settings) -> dg.ExecutorDefinition:
    """The executor of every job that names none (the asset jobs)."""
    return dg.multiprocess_executor if settings.executor == "multiprocess" else dg.in_process_executor


def op_job_executor(settings: Settings) -> dg.ExecutorDefinition:
    """The op jobs' executor."""
    if settings.executor == "celery":
        from celery.exceptions import DuplicateTaskNameWarning
        from dagster_celery import celery_executor

        # dagster-celery registers its step task on a fresh app for every step it submits; the
        # second registration (same task, same name) is a no-op that Celery 5.7 warns about.
        warnings.filterwarnings("ignore", "Task name 'execute_plan' is already registered",
                                DuplicateTaskNameWarning, r"dagster_celery\.executor")
        return celery_executor.configured(celery_config(settings))
    return default_executor(settings)


def with_op_executor(job: dg.JobDefinition, settings: Settings) -> dg.JobDefinition:
    """The op job as the Definitions hold it: on ORDERSYS_EXECUTOR's executor."""
    return job.with_executor_def(op_job_executor(settings))
