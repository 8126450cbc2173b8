"""Every notification type renders; a template that cannot render says which template and field."""

from __future__ import annotations

from datetime import datetime

import pytest

from ordersys_pipelines.domain.money import for_customer
from ordersys_pipelines.domain.notifications.context import Line, NotificationRow, template_context
from ordersys_pipelines.domain.notifications.outbox import NOTIFICATION_TYPES, REFUND_TYPES
from ordersys_pipelines.domain.notifications.templates import TemplateRenderError, render

REASONS = {"order_failed": "out of stock", "payment_failed": "card_expired", "order_cancelled": "customer request",
           "refund_failed": "gateway timeout"}


def _row(notification_type: str, **overrides) -> NotificationRow:
    values = dict(
        id=7, type=notification_type, dedup_key=f"order:1:{notification_type}", attempts=0, channel=None,
        recipient="zoe@example.com", reason=REASONS.get(notification_type), subject=None, body=None,
        payload=None, created_at=datetime(2024, 3, 9), order_id=1, order_ref="A-1001",
        order_date=datetime(2024, 3, 9, 14, 30), order_status="finalized", total_cents=123450,
        customer_name="Zoë Ångström", customer_email="zoe@example.com", customer_ref=None,
        customer_channel=None, refund_id=None, refund_reference=None, refund_amount_cents=None, refund_type=None,
        lines=[Line("SKU-1", "Crème brûlée set", 2, 61700), Line("SKU-2", "Spoon", 1, 50)],
    )
    if notification_type in REFUND_TYPES:
        values.update(refund_id=3, refund_reference="RF-9", refund_amount_cents=2999, refund_type="partial")
    values.update(overrides)
    return NotificationRow(**values)


@pytest.mark.parametrize("notification_type", NOTIFICATION_TYPES)
def test_every_type_renders_its_fields(notification_type):
    rendered = render(notification_type, template_context(_row(notification_type), "EUR"))
    assert "A-1001" in rendered.subject and "\n" not in rendered.subject
    assert rendered.body.startswith("Hello Zoë Ångström,")
    if notification_type in REFUND_TYPES:
        assert "€29.99" in rendered.subject + rendered.body and "RF-9" in rendered.body
    else:
        assert "2 x Crème brûlée set (SKU-1) at €617.00: €1,234.00" in rendered.body
        assert "1 x Spoon (SKU-2) at €0.50: €0.50" in rendered.body
        assert "Total: €1,234.50" in rendered.body
    if notification_type in REASONS:
        assert f"Reason: {REASONS[notification_type]}" in rendered.body


def test_reason_line_is_left_out_when_there_is_none():
    rendered = render("order_cancelled", template_context(_row("order_cancelled", reason=None), "EUR"))
    assert "Reason" not in rendered.body


def test_currency_setting_changes_the_format():
    rendered = render("payment_succeeded", template_context(_row("payment_succeeded"), "CHF"))
    assert rendered.subject == "Payment of 1,234.50 CHF received for order A-1001"


@pytest.mark.parametrize("notification_type", NOTIFICATION_TYPES)
def test_a_template_with_a_missing_field_names_template_and_field(notification_type, tmp_path):
    (tmp_path / f"{notification_type}.j2").write_text(
        "{% block subject %}Order {{ order_ref }}{% endblock %}\n"
        "{% block body %}\nHello {{ customer_name }},\nyour parcel: {{ tracking_number }}\n{% endblock %}\n"
    )
    with pytest.raises(TemplateRenderError) as error:
        render(notification_type, template_context(_row(notification_type), "EUR"), str(tmp_path))
    message = str(error.value)
    assert f"template '{notification_type}.j2'" in message
    assert "missing field 'tracking_number'" in message and "line 4" in message
    assert error.value.field == "tracking_number"


def test_a_missing_attribute_of_a_line_is_named_with_the_included_template(tmp_path):
    (tmp_path / "_lines.j2").write_text("{% for line in lines %}{{ line.colour }}{% endfor %}\n")
    with pytest.raises(TemplateRenderError, match=r"template 'order_shipped.j2' \(in '_lines.j2' line 1\): "
                                                   r"missing field 'colour'"):
        render("order_shipped", template_context(_row("order_shipped"), "EUR"), str(tmp_path))


def test_refund_fields_do_not_exist_in_order_templates(tmp_path):
    (tmp_path / "order_confirmed.j2").write_text(
        "{% block subject %}{{ refund_amount }}{% endblock %}{% block body %}x{% endblock %}")
    with pytest.raises(TemplateRenderError, match="missing field 'refund_amount'"):
        render("order_confirmed", template_context(_row("order_confirmed"), "EUR"), str(tmp_path))


def test_the_templates_folder_overrides_only_what_it_has(tmp_path):
    (tmp_path / "order_shipped.j2").write_text(
        "{% block subject %}Unterwegs: {{ order_ref }}{% endblock %}{% block body %}Hallo {{ customer_name }}"
        "{% endblock %}")
    context = template_context(_row("order_shipped"), "EUR")
    assert render("order_shipped", context, str(tmp_path)).subject == "Unterwegs: A-1001"
    assert render("order_delivered", template_context(_row("order_delivered"), "EUR"), str(tmp_path)).subject == (
        "Your order A-1001 has been delivered")



def test_an_override_and_its_includes_see_jinjas_globals_and_the_fields(tmp_path):
    """The globals a template sees are copied once (templates.make_globals): range, namespace,
    cycler and the fields are there in the template, in an included one and in a block."""
    (tmp_path / "_count.j2").write_text("{% set ns = namespace(n=0) %}{% for _ in range(3) %}"
                                        "{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }} for {{ order_ref }}")
    (tmp_path / "order_shipped.j2").write_text(
        "{% block subject %}{% set c = cycler('a', 'b') %}{{ c.next() }}{{ c.next() }} {{ order_ref }}"
        "{% endblock %}{% block body %}{% include '_count.j2' %}, {{ lines | length }} lines{% endblock %}")
    rendered = render("order_shipped", template_context(_row("order_shipped"), "EUR"), str(tmp_path))
    assert (rendered.subject, rendered.body) == ("ab A-1001", "3 for A-1001, 2 lines\n")

@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{% block body %}only a body{% endblock %}", "has no subject block"),
        ("{% block subject %}{% if %}{% endblock %}", "syntax error"),
        ("{% block subject %} {% endblock %}{% block body %}x{% endblock %}", "subject block renders empty"),
    ],
)
def test_broken_templates_are_named(tmp_path, template, message):
    (tmp_path / "order_delivered.j2").write_text(template)
    with pytest.raises(TemplateRenderError, match=rf"template 'order_delivered.j2'.*{message}"):
        render("order_delivered", template_context(_row("order_delivered"), "EUR"), str(tmp_path))


def test_unknown_type_has_no_template():
    with pytest.raises(TemplateRenderError, match="'order_teleported.j2': no such template"):
        render("order_teleported", {})


@pytest.mark.parametrize(
    ("cents", "currency", "text"),
    [
        (123450, "EUR", "€1,234.50"),
        (5, "EUR", "€0.05"),
        (0, "EUR", "€0.00"),
        (-250, "USD", "-$2.50"),
        (100000000001, "GBP", "£1,000,000,000.01"),
        (123450, "CHF", "1,234.50 CHF"),
        (123450, "jpy", "123,450 JPY"),
        (1234, "KWD", "1.234 KWD"),
    ],
)
def test_money_is_formatted_exactly_from_cents(cents, currency, text):
    assert for_customer(cents, currency) == text


def test_money_refuses_floats():
    with pytest.raises(TypeError, match="integer minor units"):
        for_customer(12.5, "EUR")
