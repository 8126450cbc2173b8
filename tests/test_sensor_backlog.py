"""Splitting a backlog into parallel batch runs."""

from ordersys_pipelines.sensors.backlog import parallel_runs, share


def test_one_run_per_batch_up_to_the_parallelism():
    assert parallel_runs(0, 100, 4) == 0
    assert parallel_runs(1, 100, 4) == 1
    assert parallel_runs(100, 100, 4) == 1
    assert parallel_runs(101, 100, 4) == 2
    assert parallel_runs(10_000, 100, 4) == 4
    assert parallel_runs(10_000, 100, 1) == 1


def test_shares_cover_every_batch():
    assert share(3, 3) == 1
    assert share(7, 2) == 4
    assert share(1, 4) == 1
