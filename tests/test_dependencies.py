"""pyproject.toml declares what the code imports, and nothing it does not use."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Declared but never imported: used as command-line tools, drivers named in URLs, plugins, or
# loaded by Dagster itself.
NOT_IMPORTED = {
    "dagster-webserver", "dagster-postgres", "dagster-dg-cli",  # `dg dev`, dagster.yaml storage
    "psycopg", "pymysql",  # SQLAlchemy drivers chosen by the database URL
    "pytest-xdist", "ruff", "httpx2",  # pytest plugin, linter, starlette.testclient's client
    "playwright",  # imported through pytest.importorskip in the browser test
    "pandas",  # pyarrow's Table.to_pandas in the generated-file test
}


def _imported(folder: str) -> set[str]:
    modules = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"ordersys_pipelines"}


def _distributions(modules: set[str]) -> set[str]:
    known = packages_distributions()
    return {known[m][0].lower() for m in modules if m in known}


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].lower() for req in requirements}


def test_every_import_is_declared_and_every_declaration_used():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, test = _names(project["dependencies"]), _names(project["optional-dependencies"]["test"])
    package = _distributions(_imported("ordersys_pipelines"))
    tooling = _distributions(_imported("tests") | _imported("bench"))
    assert package - runtime == set()
    assert tooling - runtime - test == set()
    assert (runtime | test) - package - tooling - NOT_IMPORTED == set()
    assert all(re.search(r"[<>=]", req) for req in project["dependencies"] + project["optional-dependencies"]["test"])
