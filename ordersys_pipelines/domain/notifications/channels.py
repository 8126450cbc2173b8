"""Delivery channels: a structured log line, e-mail over SMTP, and a signed webhook.

Every failure is classified: a TransientError is retried later (connection refused, timeouts,
SMTP 4xx, HTTP 5xx/408/429), a PermanentError fails the notification at once with the
receiving server's reply (SMTP 5xx such as a refused recipient, HTTP 4xx). A transient error
that says the channel itself is in trouble rather than this one message (`channel_wide`: the
server does not answer, the webhook receiver answers 5xx, SMTP 421) feeds the dispatch's circuit
breaker (dispatch.breaker); ChannelUnavailable is the one where nothing answers at all.
"""

from __future__ import annotations

import email.policy
import http.client
import json
import logging
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

from ordersys_pipelines.domain.notifications.config import NotifierConfig
from ordersys_pipelines.domain.payments.signing import sign

SIGNATURE_HEADER = "Ordersys-Signature"
_POLICY = email.policy.SMTP.clone(cte_type="7bit")
logger = logging.getLogger("ordersys.notifications")


class ChannelError(Exception):
    """A message that was not delivered."""


class TransientError(ChannelError):
    """Worth trying again later. `channel_wide`: the channel is in trouble, not just this message."""

    channel_wide = False

    def __init__(self, *args, channel_wide: bool | None = None):
        super().__init__(*args)
        if channel_wide is not None:
            self.channel_wide = channel_wide


class ChannelUnavailable(TransientError):
    """The channel itself is down (nothing answers, login refused ...)."""

    channel_wide = True


class PermanentError(ChannelError):
    """Will never succeed for this message (the receiving server said so)."""


@dataclass(frozen=True)
class Message:
    notification_id: int
    event_id: str
    type: str
    recipient: str | None
    recipient_name: str | None
    subject: str
    body: str
    payload: str  # JSON


class Channel:
    name = ""

    def __init__(self, config: NotifierConfig):
        self.config = config

    def send(self, message: Message) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections (called once at the end of a batch)."""


class LogChannel(Channel):
    """One JSON line per notification on the `ordersys.notifications` logger."""

    name = "log"

    def __init__(self, config: NotifierConfig):
        super().__init__(config)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        if not logger.hasHandlers():  # a bare process: make sure the line is written somewhere
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)

    def send(self, message: Message) -> None:
        logger.info(json.dumps({
            "event": "notification",
            "channel": self.name,
            "notification_id": message.notification_id,
            "event_id": message.event_id,
            "type": message.type,
            "recipient": message.recipient,
            "subject": message.subject,
            "body": message.body,
        }, ensure_ascii=False))


class EmailChannel(Channel):
    """SMTP with one connection per batch (STARTTLS and login when configured)."""

    name = "email"

    def __init__(self, config: NotifierConfig):
        super().__init__(config)
        self._smtp: smtplib.SMTP | None = None

    @property
    def server(self) -> str:
        return f"{self.config.smtp_host}:{self.config.smtp_port}"

    def _connect(self) -> smtplib.SMTP:
        config = self.config
        try:
            smtp = smtplib.SMTP(config.smtp_host, config.smtp_port, timeout=config.timeout_seconds)
        except (OSError, smtplib.SMTPException) as exc:
            raise ChannelUnavailable(f"SMTP server {self.server} unavailable: {_describe(exc)}") from exc
        try:
            smtp.ehlo()
            if config.smtp_tls:
                if not smtp.has_extn("starttls"):
                    raise ChannelUnavailable(f"SMTP server {self.server} does not offer STARTTLS")
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if config.smtp_username:
                smtp.login(config.smtp_username, config.smtp_password or "")
        except ChannelUnavailable:
            _quietly_close(smtp)
            raise
        except (OSError, smtplib.SMTPException) as exc:
            _quietly_close(smtp)
            raise ChannelUnavailable(f"SMTP server {self.server} refused the session: {_describe(exc)}") from exc
        self._smtp = smtp
        return smtp

    def build(self, message: Message) -> EmailMessage:
        if not message.recipient:
            raise PermanentError("the customer has no e-mail address")
        # RFC 2047 headers and a 7-bit transfer encoding of UTF-8 bodies (no 8BITMIME needed).
        mail = EmailMessage(policy=_POLICY)
        try:
            mail["From"] = self.config.smtp_sender
            mail["To"] = Address(display_name=message.recipient_name or "", addr_spec=message.recipient)
            mail["Subject"] = message.subject
        except (ValueError, IndexError, TypeError) as exc:
            raise PermanentError(f"cannot address {message.recipient!r}: {exc}") from exc
        mail["Date"] = formatdate(usegmt=True)
        mail["Message-ID"] = make_msgid(idstring=str(message.notification_id),
                                        domain=self.config.smtp_sender.rpartition("@")[2] or None)
        mail["X-Ordersys-Notification"] = str(message.notification_id)
        mail["X-Ordersys-Event"] = message.event_id
        mail.set_content(message.body)
        # Fold headers at the hard limit only: Python's folding at 78 drops the space between
        # two encoded words ("danke, Zoë" arrives as "danke,Zoë"). The body is encoded already.
        mail.policy = _POLICY.clone(max_line_length=998)
        return mail

    def send(self, message: Message) -> None:
        mail = self.build(message)
        # One reconnect: servers drop idle sessions, which shows at the next command (MAIL FROM).
        for attempt in (1, 2):
            smtp = self._smtp or self._connect()
            try:
                smtp.send_message(mail, from_addr=self.config.smtp_sender, to_addrs=[message.recipient])
                return
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = next(iter(exc.recipients.values()))
                raise _by_code(code, f"recipient {message.recipient} refused: {code} {_text(reply)}") from exc
            except smtplib.SMTPResponseException as exc:  # sender refused, data refused ...
                raise _by_code(exc.smtp_code, f"SMTP {exc.smtp_code} {_text(exc.smtp_error)}") from exc
            except smtplib.SMTPNotSupportedError as exc:
                raise PermanentError(f"cannot deliver to {message.recipient}: {exc}") from exc
            except (OSError, smtplib.SMTPException) as exc:
                self.close()
                if attempt == 2:
                    raise ChannelUnavailable(f"SMTP server {self.server} lost: {_describe(exc)}") from exc

    def close(self) -> None:
        if self._smtp is not None:
            _quietly_close(self._smtp, polite=True)
            self._smtp = None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # a POST must not turn into a GET elsewhere
        return None


class WebhookChannel(Channel):
    """HTTP POST of the notification's JSON, signed like the gateway's callbacks
    (`Ordersys-Signature: t=<epoch>,v1=<HMAC-SHA256 of "<t>." + body>`)."""

    name = "webhook"

    def __init__(self, config: NotifierConfig):
        super().__init__(config)
        self._opener = urllib.request.build_opener(_NoRedirects)

    def send(self, message: Message) -> None:
        url = self.config.webhook_url
        if not url:
            raise ChannelUnavailable("webhook channel without a URL (set ORDERSYS_NOTIFY_WEBHOOK_URL)")
        body = message.payload.encode()
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "ordersys-notifier",
            SIGNATURE_HEADER: sign(body, self.config.webhook_secret),
            "Ordersys-Event": message.type,
            # Delivery is at least once: receivers deduplicate on this key.
            "Idempotency-Key": message.event_id,
        })
        try:
            with self._opener.open(request, timeout=self.config.timeout_seconds) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            detail = f"HTTP {exc.code} {exc.reason} from {url}: {_excerpt(exc)}"
            if exc.code >= 500 or exc.code in (408, 425, 429):  # the one receiver is in trouble
                raise TransientError(detail, channel_wide=True) from exc
            raise PermanentError(detail) from exc
        except urllib.error.URLError as exc:
            raise ChannelUnavailable(f"webhook {url} unavailable: {_describe(exc.reason)}") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ChannelUnavailable(f"webhook {url} unavailable: {_describe(exc)}") from exc


CHANNEL_CLASSES: dict[str, type[Channel]] = {c.name: c for c in (LogChannel, EmailChannel, WebhookChannel)}


class Channels:
    """The channels of one batch, opened on first use and closed together. Whether a channel
    that failed is tried again is the caller's decision (dispatch's circuit breaker)."""

    def __init__(self, config: NotifierConfig):
        self.config = config
        self._open: dict[str, Channel] = {}

    def send(self, channel: str, message: Message) -> None:
        if channel not in self._open:
            if channel not in CHANNEL_CLASSES:
                raise PermanentError(f"unknown channel {channel!r}; valid: {', '.join(CHANNEL_CLASSES)}")
            self._open[channel] = CHANNEL_CLASSES[channel](self.config)
        self._open[channel].send(message)

    def close(self) -> None:
        for channel in self._open.values():
            channel.close()
        self._open.clear()

    def __enter__(self) -> Channels:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _by_code(code: int, detail: str) -> ChannelError:
    if code >= 500:
        return PermanentError(detail)
    return TransientError(detail, channel_wide=code == 421)  # 421: the server is closing the session


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


def _describe(exc: BaseException | str) -> str:
    if isinstance(exc, str):
        return exc
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _excerpt(exc: urllib.error.HTTPError, limit: int = 300) -> str:
    try:
        text = exc.read(limit).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "(no body)"


def _quietly_close(smtp: smtplib.SMTP, polite: bool = False) -> None:
    try:
        if polite:
            smtp.quit()
        else:
            smtp.close()
    except (OSError, smtplib.SMTPException):
        smtp.close()
