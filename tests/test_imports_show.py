"""`ordersys imports show FILE`: a file found by name, content hash or id, with its counts,
error and rejects a page at a time; hostile row text printed as text, never as markup."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from imports_support import HEADER, run_import

from ordersys_pipelines.cli import main
from ordersys_pipelines.db.engine import get_engine
from ordersys_pipelines.domain.imports.csv_format import CsvFormatError

BAD_ROWS = [
    "B-{n},2024-03-01T10:00:00,b{n}@example.com,Bob [bold]x[/],SKU-1,Widget,-{n},2.50",
    "C-{n},2024-03-01T10:00:00,c{n}@example.com,Cy\x07\x1b[31m,SKU-1,Widget,1,abc",
]


def _file(bad: int) -> str:
    good = "A-1,2024-03-01T10:00:00,ann@example.com,Ann,SKU-1,Widget,1,2.50\n"
    rows = [BAD_ROWS[n % 2].format(n=n + 1) for n in range(bad)]
    return HEADER + good + "\n".join(rows) + "\n"


def _show(*args: str) -> CliRunner:
    return CliRunner().invoke(main, ["imports", "show", *args], env={"COLUMNS": "200"})


@pytest.fixture
def imported(settings, tmp_path):
    engine = get_engine(settings.database_url)
    result = run_import(engine, tmp_path, _file(7), name="march [shop].csv")
    with pytest.raises(CsvFormatError):
        run_import(engine, tmp_path, "order_ref,customer_email\nX,a@b.c\n", name="no-prices.csv")
    return result


def test_show_by_name_hash_and_id(imported):
    for wanted in ("march [shop].csv", imported.content_hash[:10], imported.content_hash.upper(), str(imported.file_id)):
        result = _show(wanted)
        assert result.exit_code == 0, (wanted, result.output)
        assert "march [shop].csv" in result.output and "completed" in result.output
        assert "rejected rows" in result.output and "7" in result.output
    output = _show(str(imported.file_id)).output
    assert "Bob [bold]x[/]" in output  # shown as written, not as markup
    assert "\\x07\\x1b[31m" in output and "\x1b" not in output  # control bytes escaped
    assert "quantity" in output  # the reason of a negative quantity


def test_rejects_are_paged(imported):
    first = _show(str(imported.file_id), "--limit", "3")
    assert first.exit_code == 0, first.output
    assert f"more: ordersys imports show {imported.file_id} --after-line 5 --limit 3" in first.output
    second = _show(str(imported.file_id), "--limit", "3", "--after-line", "5")
    assert "B-5" in second.output and "B-1," not in second.output and "more:" in second.output
    last = _show(str(imported.file_id), "--limit", "3", "--after-line", "8")
    assert "B-7" in last.output and "more:" not in last.output
    assert "No rejected rows after line 9" in _show(str(imported.file_id), "--after-line", "9").output


def test_a_failed_file_shows_its_error(imported):
    result = _show("no-prices.csv")
    assert result.exit_code == 0, result.output
    assert "failed" in result.output and "unit_price" in result.output
    assert "No rejected rows." in result.output


@pytest.mark.parametrize("wanted", ["nothing.csv", "999999", "abc", "ffffffffffff", "   "])
def test_unknown_files_are_named_in_the_error(imported, wanted):
    result = _show(wanted)
    assert result.exit_code == 1
    assert "Error:" in result.output and ("no imported file" in result.output or "no file named" in result.output)
