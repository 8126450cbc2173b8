"""Loading the code location leaves out the libraries only some steps use.

Every run's own process imports the code location before its first step, so what the
definitions import is paid by every run: the import's readers (pyarrow, numpy), the Redis
client, the notification templates (Jinja2), the reports' tables (tabulate) and the Celery
broker's client are imported by the steps and commands that use them. Checked in a fresh
interpreter, where nothing else has imported them first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Imported by the steps that need them, never by the definitions.
STEP_ONLY = ("pyarrow", "numpy", "pandas", "redis", "jinja2", "tabulate", "kombu", "celery")

LOAD = """
import json, sys
from ordersys_pipelines.definitions import build_defs
defs = build_defs()
defs.resolve_all_job_defs()
defs.resolve_job_def("orders_import")
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def loaded_packages(tmp_path) -> set[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERSYS_")}
    env.update({"ORDERSYS_DATABASE_URL": f"sqlite:///{tmp_path / 'ordersys.db'}", "ORDERSYS_INBOX": str(tmp_path)})
    done = subprocess.run([sys.executable, "-c", LOAD], env=env, capture_output=True, text=True, timeout=120,
                          check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_the_definitions_load_without_the_steps_libraries(tmp_path):
    loaded = loaded_packages(tmp_path)

    assert "dagster" in loaded and "ordersys_pipelines" in loaded
    assert sorted(loaded & set(STEP_ONLY)) == []
