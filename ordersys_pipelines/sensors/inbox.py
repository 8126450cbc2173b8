"""The inbox sensor: a file dropped into ORDERSYS_INBOX becomes a partition of `orders_csv`
and one run (or an `inventory_load` run for a catalog file).

It only looks: a file is taken once its size and modification time are the same as on the
previous tick (so a file still being written waits), or at first sight when it was last modified
SETTLED_SECONDS ago or longer (the same evidence: unchanged for that long; a file renamed into
the inbox when complete needs no second tick). `.part`, hidden files and folders are left
alone, and content already imported is not requested again. The cursor remembers what it saw;
the content hash as run key is the backstop against launching a file twice.
"""

# No `from __future__ import annotations`: Dagster reads the config and resource annotations.
import json
import time
from pathlib import Path

import dagster as dg
from sqlalchemy import select

from ordersys_pipelines.assets.catalog import inventory_load
from ordersys_pipelines.assets.imports import file_tags, order_files, orders_import_job
from ordersys_pipelines.db.engine import reading
from ordersys_pipelines.db.schema import import_files
from ordersys_pipelines.domain.imports.csv_format import CsvFormatError, detect_kind
from ordersys_pipelines.domain.imports.files import content_hash, inbox_files, partition_key
from ordersys_pipelines.resources.database import DatabaseResource
from ordersys_pipelines.resources.imports import ImportsResource


def _kind(path: Path) -> str:
    # Imported here: the reader brings pyarrow and numpy, and every run worker loads this module.
    from ordersys_pipelines.domain.imports.reader import read_header

    try:
        return detect_kind(read_header(path)[0])
    except (CsvFormatError, OSError):
        return "orders"  # the import run says what is wrong with it, and files it under failed/


# A file unchanged for this long is finished: taken at first sight.
SETTLED_SECONDS = 5
# A look on every loop of Dagster's sensor daemon (every 5 s); an interval of 5 s would be met
# only every other loop (see Settings.sensor_interval_seconds).
LOOK_INTERVAL_SECONDS = 4


@dg.sensor(
    name="inbox_sensor",
    jobs=[orders_import_job, inventory_load],
    minimum_interval_seconds=LOOK_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Watches ORDERSYS_INBOX: each new, finished file becomes an orders_csv partition and a run.",
)
def inbox_sensor(context: dg.SensorEvaluationContext, database: DatabaseResource, imports: ImportsResource):
    seen: dict = json.loads(context.cursor) if context.cursor else {}
    now_seen: dict = {}
    ready: list[tuple[Path, str]] = []
    for path in inbox_files(imports.inbox_path):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        before = seen.get(path.name)
        unchanged = before and before["size"] == entry["size"] and before["mtime_ns"] == entry["mtime_ns"]
        settled = before is None and time.time_ns() - stat.st_mtime_ns >= SETTLED_SECONDS * 1_000_000_000
        if unchanged or settled:
            before = before or {}
            entry["hash"] = before.get("hash") or content_hash(path)
            entry["requested"] = before.get("requested", False)
            if not entry["requested"]:
                ready.append((path, entry["hash"]))
        now_seen[path.name] = entry

    done = set()
    if ready:
        with reading(database.engine) as conn:
            done = set(
                conn.execute(
                    select(import_files.c.content_hash).where(
                        import_files.c.content_hash.in_([digest for _, digest in ready]),
                        import_files.c.status == "completed",
                    )
                ).scalars()
            )

    partitions, runs, requested = [], [], set()
    for path, digest in ready:
        now_seen[path.name]["requested"] = True
        if digest in done or digest in requested:
            context.log.info(f"{path.name}: this content was imported before; not requested again")
            continue
        requested.add(digest)
        if _kind(path) == "inventory":
            runs.append(
                dg.RunRequest(
                    run_key=f"inventory:{digest}",
                    job_name=inventory_load.name,
                    run_config={"ops": {"product_catalog": {"config": {"path": str(path)}}}},
                    tags=file_tags(path.name),
                )
            )
            continue
        key = partition_key(path.name, digest)
        partitions.append(key)
        runs.append(
            dg.RunRequest(
                run_key=digest,
                job_name=orders_import_job.name,
                partition_key=key,
                run_config={"ops": {"orders_csv": {"config": {"path": str(path)}}}},
                tags=file_tags(path.name),
            )
        )

    return dg.SensorResult(
        run_requests=runs,
        dynamic_partitions_requests=[order_files.build_add_request(partitions)] if partitions else [],
        cursor=json.dumps(now_seen, sort_keys=True),
    )
