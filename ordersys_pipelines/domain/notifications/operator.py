"""Alerts for the operator (a failed run, say) through the configured notification channel."""

from __future__ import annotations

import json
import logging
import uuid

from ordersys_pipelines.domain.notifications.channels import ChannelError, Channels, Message
from ordersys_pipelines.domain.notifications.config import NotifierConfig

log = logging.getLogger("ordersys.notifications.operator")


def _config(source) -> NotifierConfig:
    if isinstance(source, NotifierConfig):
        return source
    config = getattr(source, "config", None)  # NotifierResource
    if isinstance(config, NotifierConfig):
        return config
    return NotifierConfig.from_settings(source)  # Settings


def notify_operator(settings_or_resource, subject: str, body: str) -> str:
    """Send `subject`/`body` to ORDERSYS_OPERATOR_EMAIL through the configured channel: e-mail
    when the channel is email and an operator address is set, the webhook when the channel is
    webhook, else a log line. Returns the channel used; raises ChannelError when the alert could
    not be delivered (after logging it, so it is never lost silently)."""
    config = _config(settings_or_resource)
    channel = config.channel
    if channel == "email" and not config.operator_email:
        channel = "log"
    event_id = f"operator:{uuid.uuid4().hex}"
    message = Message(
        notification_id=0,
        event_id=event_id,
        type="operator_alert",
        recipient=config.operator_email,
        recipient_name="ordersys operator",
        subject=" ".join(subject.split()),
        body=body,
        payload=json.dumps({"event_id": event_id, "type": "operator_alert", "subject": subject, "body": body},
                           ensure_ascii=False),
    )
    try:
        with Channels(config) as channels:
            channels.send(channel, message)
    except ChannelError as exc:
        log.error("operator alert %r could not be sent by %s: %s\n%s", subject, channel, exc, body)
        raise
    if channel == "log":  # the line is in the notification log; say so where operators look
        log.warning("operator alert %r written to %s", message.subject, config.log_file)
    return channel
