"""Cents as text for operators (plain), reports (grouped) and customers."""

import pytest

from ordersys_pipelines.domain.money import for_customer, grouped, plain
from ordersys_pipelines.domain.refunds.amounts import parse_amount


def test_plain_is_what_an_operator_types_back():
    cents = (0, 1, 1_250, -5, 123_456_789)
    assert [plain(c) for c in cents] == ["0.00", "0.01", "12.50", "-0.05", "1234567.89"]
    assert [parse_amount(plain(c)) for c in cents] == list(cents)


def test_grouped_separates_thousands_and_names_the_currency():
    assert grouped(123_450) == "1,234.50"
    assert grouped(-123_456_789, "EUR") == "-1,234,567.89 EUR"


def test_floats_are_refused():
    for render in (plain, grouped, for_customer):
        with pytest.raises(TypeError, match="integer minor units"):
            render(12.5)
