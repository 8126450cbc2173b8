"""Splitting a backlog into parallel batch runs."""

from ordersys_pipelines.sensors.backlog import even_batch, parallel_runs, share


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


def test_a_backlog_short_of_full_batches_is_shared_evenly():
    assert even_batch(15_000, 2, 10_000) == 7_500
    assert even_batch(25_001, 3, 10_000) == 8_334  # rounded up: nothing is left for a later tick
    assert even_batch(40_000, 4, 10_000) == 10_000
    assert even_batch(100_000, 4, 10_000) == 10_000  # more than the runs take: full batches
    assert even_batch(3, 1, 10_000) == 10_000  # one run keeps its batch (more may arrive)
    assert even_batch(1, 2, 10_000) == 1
    assert even_batch(15_000, 2, 10_000, capped=True) == 10_000  # a lower bound of the backlog
