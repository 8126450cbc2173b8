"""A data failure on the real stack: one failed run, not retried, one operator alert; and the
UI's re-execution of it keeps its partition and tags."""

from __future__ import annotations

import json
import time
import urllib.request

import dagster as dg
import pytest

pytestmark = pytest.mark.xdist_group("stack")


def test_a_file_without_prices_fails_one_run_and_alerts_once(stack, rejected_file):
    assert rejected_file.runs == 1
    assert rejected_file.alerts == 1
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        run = instance.get_run_by_id(rejected_file.run_id)
        # The daemon decides on run retries from this tag: a step failure is not retried.
        assert run.tags["dagster/will_retry"] == "false"
        assert run.job_name == "orders_import" and run.tags["ordersys/stage"] == "import"
    assert (stack.inbox / "failed" / f"{rejected_file.name}.reason").is_file()


REEXECUTE = """mutation($parent: String!) {
  launchPipelineReexecution(reexecutionParams: {parentRunId: $parent, strategy: FROM_FAILURE}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}"""


def _graphql(stack, query: str, variables: dict) -> dict:
    request = urllib.request.Request(f"{stack.url}/graphql", method="POST",
                                     data=json.dumps({"query": query, "variables": variables}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_the_uis_reexecute_keeps_the_partition_and_file_tags(stack, rejected_file):
    """What the run page's "Re-execute from failure" button sends: the new run is the same
    import of the same partition and file; it fails again (the file is still wrong) and that
    failure is reported once more, with the same advice."""
    answer = _graphql(stack, REEXECUTE, {"parent": rejected_file.run_id})["data"]["launchPipelineReexecution"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    child_id = answer["run"]["runId"]
    deadline = time.monotonic() + 180
    with dg.DagsterInstance.from_config(str(stack.home)) as instance:
        parent = instance.get_run_by_id(rejected_file.run_id)
        while (child := instance.get_run_by_id(child_id)).status not in (
                dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS) and time.monotonic() < deadline:
            time.sleep(1)
        assert child.status == dg.DagsterRunStatus.FAILURE, stack.log()
    assert child.job_name == parent.job_name
    assert child.tags["dagster/parent_run_id"] == parent.run_id
    for tag in ("dagster/partition", "ordersys/file", "ordersys/stage"):
        assert child.tags[tag] == parent.tags[tag]
