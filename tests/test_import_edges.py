"""What the corpus does not show by file alone: a run that ends with an unexpected error, the
file's own text in rejects found at merge time, resume with whole-order rejects, records far
longer than the reader's block, and refund amounts read by the import's grammar."""

from __future__ import annotations

import dagster as dg
import pytest
from click.testing import CliRunner
from imports_support import HEADER, balanced, rejects, rows, run_import, scalar, write

from ordersys_pipelines.assets.imports import chunk_listener, order_files, orders_csv
from ordersys_pipelines.cli import main
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.imports import reader
from ordersys_pipelines.domain.imports.catalog import load_catalog
from ordersys_pipelines.domain.imports.csv_format import CsvFormatError
from ordersys_pipelines.domain.imports.files import content_hash, partition_key
from ordersys_pipelines.domain.imports.reader import CsvChunkReader
from ordersys_pipelines.domain.money import parse_amount
from ordersys_pipelines.resources import build_resources


def line(ref: str, sku: str = "MUG", qty: str = "1", price: str = "10.00", name: str = "Ann") -> str:
    return f"{ref},2024-05-01 12:00,{ref.lower()}@example.com,{name},{sku},Mug,{qty},{price}\n"


FILE = HEADER + line("O1", "A") + line("O2") + line("O1", "B", qty="+3") + line("O3") + line("O1", "C", price="10")


class DiskFull(RuntimeError):
    pass


def test_a_run_ending_with_an_unexpected_error_fails_the_file_with_its_cause_and_a_rerun_resumes(settings):
    path = write(settings.inbox, "orders.csv", FILE)
    key = partition_key(path.name, content_hash(path))
    engine = get_engine(settings.database_url)

    def disk_full(progress):
        if progress.chunk_index == 1:
            raise DiskFull("no space left on device\n(the second line of a long message)")

    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(order_files.name, [key])

        def materialize():
            return dg.materialize([orders_csv], partition_key=key, instance=instance, raise_on_error=False,
                                  resources=build_resources(settings),
                                  run_config={"ops": {"orders_csv": {"config": {"path": str(path)}}},
                                              "resources": {"imports": {"config": {"chunk_rows": 2}}}})

        with chunk_listener(disk_full):
            failed = materialize()
        assert not failed.success
        cause = "DiskFull: no space left on device"
        assert rows(engine, "SELECT status, error, chunks_committed FROM import_files") == [("failed", cause, 2)]
        failure = next(e for e in failed.all_events if e.is_step_failure).step_failure_data.user_failure_data
        assert failure.description == f"orders.csv: {cause}"
        assert failure.metadata["cause"].value == cause

        again = materialize()  # the cause is gone: the rerun resumes after the committed chunks
        assert again.success
        metadata = again.asset_materializations_for_node("orders_csv")[0].metadata
        assert (metadata["resumed_after_line"].value, metadata["lines_imported"].value) == (5, 2)
    assert rows(engine, "SELECT status, error FROM import_files") == [("completed", None)]
    assert dict(rows(engine, "SELECT order_ref, total_cents FROM orders")) == {"O2": 1000, "O3": 1000}


def test_the_cli_says_why_an_import_failed_in_one_line(settings, monkeypatch, tmp_path):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    path = write(tmp_path, "orders.csv", FILE)

    def disk_full(progress):
        raise DiskFull("no space left on device\nmore")

    with chunk_listener(disk_full):
        result = CliRunner().invoke(main, ["import", str(path), "--no-progress"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "Error: orders.csv: DiskFull: no space left on device"


def test_rejects_found_at_merge_time_quote_the_files_own_text(engine, tmp_path):
    result = run_import(engine, tmp_path, FILE, chunk_rows=2)
    assert rows(engine, "SELECT line_number, order_ref, raw_text FROM import_rejects ORDER BY line_number") == [
        (2, "O1", "O1,2024-05-01 12:00,o1@example.com,Ann,A,Mug,1,10.00"),
        (4, "O1", "O1,2024-05-01 12:00,o1@example.com,Ann,B,Mug,+3,10.00"),
        (6, "O1", "O1,2024-05-01 12:00,o1@example.com,Ann,C,Mug,1,10"),
    ]
    assert (result.lines_imported, result.rejected) == (2, 3) and balanced(result)


def test_control_characters_are_stored_visibly_in_rejects(engine, tmp_path):
    run_import(engine, tmp_path, HEADER + "A\x00,2024-05-01,a@example.com,An\x00n,S,Mug,1,1.00,x\n" + line("B"))
    assert rows(engine, "SELECT raw_text, reason FROM import_rejects") == [
        ("A\\x00,2024-05-01,a@example.com,An\\x00n,S,Mug,1,1.00,x", "expected 8 fields, found 9")]


def test_a_run_killed_between_an_orders_lines_still_rejects_the_whole_order(engine, tmp_path):
    class Killed(Exception):
        pass

    def die(progress):
        if progress.chunk_index == 1:  # the bad line (4) is committed, line 6 of its order is not
            raise Killed

    with pytest.raises(Killed):
        run_import(engine, tmp_path, FILE, chunk_rows=2, on_chunk=die)
    assert scalar(engine, "SELECT status FROM import_files") == "importing"
    result = run_import(engine, tmp_path, FILE, chunk_rows=2)
    assert result.resumed_after_line == 5
    assert rejects(engine) == [
        (2, "order O1 is not imported: its line 4 was rejected"),
        (4, "quantity '+3' has a + sign (write the digits only)"),
        (6, "order O1 is not imported: its line 4 was rejected"),
    ]
    assert (result.lines_imported, result.orders, result.rejected) == (2, 2, 3) and result.lines_balanced


def test_records_much_longer_than_the_block_are_read_and_chunks_stay_the_same(tmp_path):
    content = HEADER.rstrip("\n") + ",notes\n" + "".join(
        line(f"O{i}").rstrip("\n") + "," + ("x" * (50_000 if i % 3 == 0 else 3)) + "\n" for i in range(10))
    path = write(tmp_path, "long.csv", content)
    small = CsvChunkReader(path, chunk_rows=4, block_size=1_024)
    chunks = [(list(c.line_numbers), c.columns[0].to_pylist(), [len(v) for v in c.columns[8].to_pylist()])
              for c in small.chunks()]
    assert chunks == [
        ([2, 3, 4, 5], ["O0", "O1", "O2", "O3"], [50_000, 3, 3, 50_000]),
        ([6, 7, 8, 9], ["O4", "O5", "O6", "O7"], [3, 3, 50_000, 3]),
        ([10, 11], ["O8", "O9"], [3, 50_000]),
    ]
    assert (small.physical_lines, small.blank_lines, small.continued_lines) == (10, 0, 0)


@pytest.mark.parametrize("text", ["1e2", "1_0", "１２", "١٢", "0x10", "1,000.00", "+5", "NaN", "inf"])
def test_refund_amounts_refuse_what_the_import_refuses(text):
    with pytest.raises(ValueError):
        parse_amount(text)


def test_control_characters_in_a_catalog_reject_their_line(engine, tmp_path):
    result = load_catalog(engine, write(tmp_path, "c.csv", "sku,name,price,stock\nA,Ap\x00ple,1.00,4\nB,Pear,1.00,5\n"))
    assert (result.products_created, result.rejected) == (1, 1)
    assert rows(engine, "SELECT line_number, raw_text, reason FROM import_rejects") == [
        (2, "A,Ap\\x00ple,1.00,4", "name holds the control character U+0000 (at character 3)")]


def test_a_row_beyond_the_largest_block_fails_the_file_saying_so(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "MAX_BLOCK_SIZE", 1 << 18)  # 256 KB (the first block) instead of 256 MB
    content = HEADER + line("O1") + line("O2", name="y" * 1_000_000) + line("O3")
    with pytest.raises(CsvFormatError, match="a row after the first 1 rows is longer than 0.25 MB"):
        run_import(engine, tmp_path, content)
    assert rows(engine, "SELECT status FROM import_files") == [("failed",)]
    assert scalar(engine, "SELECT count(*) FROM import_staging") == 0


@dg.op
def _killed_import_step() -> None:
    raise RuntimeError("the step's process was lost")


@dg.job(tags={"ordersys/stage": "import"})
def _killed_import_job() -> None:
    _killed_import_step()


def test_a_file_whose_import_run_died_is_marked_failed_by_the_run_failure_sensor(engine, tmp_path):
    from ordersys_pipelines.resources.database import DatabaseResource
    from ordersys_pipelines.sensors.import_runs import import_run_failed_sensor

    class Killed(BaseException):  # as a kill: nothing in the import gets to handle it
        pass

    instance = dg.DagsterInstance.ephemeral()
    failed = _killed_import_job.execute_in_process(instance=instance, raise_on_error=False)

    def kill(progress):
        raise Killed()

    from ordersys_pipelines.domain.imports.importer import ImportOptions, import_order_file

    with pytest.raises(Killed):
        import_order_file(engine, write(tmp_path, "orders.csv", FILE), options=ImportOptions(chunk_rows=2),
                          on_chunk=kill, run_id=failed.run_id)
    assert rows(engine, "SELECT status FROM import_files") == [("importing",)]

    context = dg.build_run_status_sensor_context(
        sensor_name="import_run_failed_sensor", dagster_instance=instance, dagster_run=failed.dagster_run,
        dagster_event=failed.get_run_failure_event(),
        resources={"database": DatabaseResource(url=engine.url.render_as_string(hide_password=False))},
    )
    import_run_failed_sensor(context)
    [(status, error)] = rows(engine, "SELECT status, error FROM import_files")
    assert status == "failed" and error.startswith("the import run failed: ") and "\n" not in error

    again = run_import(engine, tmp_path, FILE, chunk_rows=2)  # the rerun resumes and finishes the file
    assert rows(engine, "SELECT status FROM import_files") == [("completed",)] and balanced(again)
