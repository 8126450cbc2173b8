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
import os
import smtplib
import ssl
import sys
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from ordersys_pipelines.domain.notifications.config import NotifierConfig
from ordersys_pipelines.domain.payments.signing import sign

SIGNATURE_HEADER = "Ordersys-Signature"
_POLICY = email.policy.SMTP.clone(cte_type="7bit")
# A receiver's answer is read whole so the connection can serve the next request; past this it
# is not drained (the connection is dropped instead) and only its head is kept for the error.
MAX_RESPONSE_BYTES = 64 * 1024


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


# Characters JSON leaves unescaped that line readers other than '\n'-splitting ones (Python's
# str.splitlines, JavaScript) take for line ends: from a customer's name they would cut a line.
_LINE_BREAKING = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))


def _one_line(data: bytes) -> bytes:
    """`data` (UTF-8 JSON) with the line-breaking characters escaped; they occur only in strings."""
    for raw, escaped in _LINE_BREAKING:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


class LogChannel(Channel):
    """One JSON line per notification, appended to `log_file` ("-": stderr).

    Not a Python logger: a managed logger puts every line into the dispatch run's Dagster event
    log (one event write each, the run's whole cost); the run's log keeps the per-batch summary
    instead. Each line is one write to a file opened for appending, so the lines of dispatch runs
    in parallel never interleave, and a line is out of the process before its row is marked sent.
    """

    name = "log"

    def __init__(self, config: NotifierConfig):
        super().__init__(config)
        self._fd: int | None = None

    def _open(self) -> int:
        path = Path(self.config.log_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ChannelUnavailable(f"notification log {path} cannot be opened: {_describe(exc)}") from exc
        return self._fd

    def send(self, message: Message) -> None:
        data = _one_line(orjson.dumps({
            "event": "notification",
            "channel": self.name,
            "notification_id": message.notification_id,
            "event_id": message.event_id,
            "type": message.type,
            "recipient": message.recipient,
            "subject": message.subject,
            "body": message.body,
        })) + b"\n"
        if self.config.log_file == "-":
            sys.stderr.write(data.decode())
            sys.stderr.flush()
            return
        try:
            written = os.write(self._fd if self._fd is not None else self._open(), data)
        except OSError as exc:
            self.close()
            raise ChannelUnavailable(f"notification log {self.config.log_file} not written: {_describe(exc)}") from exc
        if written != len(data):  # a full disk: the line is cut, so it counts as not written
            self.close()
            raise ChannelUnavailable(f"notification log {self.config.log_file} not written: {written} of "
                                     f"{len(data)} bytes (disk full?)")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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


class WebhookChannel(Channel):
    """HTTP POST of the notification's JSON, signed like the gateway's callbacks
    (`Ordersys-Signature: t=<epoch>,v1=<HMAC-SHA256 of "<t>." + body>`).

    One keep-alive connection serves every message of a batch (and of a run). A receiver that
    closed it while idle shows at the next request, before any answer: that request is sent
    once more on a new connection (receivers deduplicate on `Idempotency-Key`). After any other
    failure the connection is dropped, so a late answer is never read as the next one's. The
    timeout bounds the connect and each wait for the receiver; redirects are not followed."""

    name = "webhook"

    def __init__(self, config: NotifierConfig):
        super().__init__(config)
        self._conn: http.client.HTTPConnection | None = None
        self._used = False  # the connection has served a request (so it may have gone stale)
        self.connections = 0  # opened so far (for tests and benchmarks)

    @property
    def url(self) -> str:
        """The URL as messages show it: without user and password."""
        parts = urlsplit(self.config.webhook_url or "")
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            parts = urlsplit(self.config.webhook_url or "")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ChannelUnavailable(f"webhook URL {self.url!r} is not an http(s) URL")
            kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            self._conn = kind(parts.hostname, parts.port, timeout=self.config.timeout_seconds)
            self._used = False
            self.connections += 1
        return self._conn

    def _target(self) -> str:
        parts = urlsplit(self.config.webhook_url or "")
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def send(self, message: Message) -> None:
        if not self.config.webhook_url:
            raise ChannelUnavailable("webhook channel without a URL (set ORDERSYS_NOTIFY_WEBHOOK_URL)")
        body = message.payload.encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "ordersys-notifier",
            SIGNATURE_HEADER: sign(body, self.config.webhook_secret),
            "Ordersys-Event": message.type,
            # Delivery is at least once: receivers deduplicate on this key.
            "Idempotency-Key": message.event_id,
        }
        for attempt in (1, 2):
            conn = self._connection()
            reused = self._used
            try:
                conn.request("POST", self._target(), body=body, headers=headers)
                response = conn.getresponse()
                status, reason = response.status, response.reason
                text = self._read(response)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused and attempt == 1:  # the receiver closed the idle connection: once more
                    continue
                raise ChannelUnavailable(f"webhook {self.url} unavailable: {_describe(exc)}") from exc
            except (OSError, http.client.HTTPException) as exc:  # refused, timed out, garbled
                self.close()
                raise ChannelUnavailable(f"webhook {self.url} unavailable: {_describe(exc)}") from exc
            self._used = True
            break
        if 200 <= status < 300:
            return
        detail = f"HTTP {status} {reason} from {self.url}: {text.strip()[:300] or '(no body)'}"
        if status >= 500 or status in (408, 425, 429):  # the one receiver is in trouble
            raise TransientError(detail, channel_wide=True)
        raise PermanentError(detail)  # 4xx, and 3xx: a POST is not redirected

    def _read(self, response: http.client.HTTPResponse) -> str:
        """The answer's text; the connection is kept only when the answer was read to its end."""
        data = response.read(MAX_RESPONSE_BYTES + 1)
        if len(data) > MAX_RESPONSE_BYTES or not response.isclosed() or response.will_close:
            self.close()
        return data[:300 * 4].decode(errors="replace")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


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


def _quietly_close(smtp: smtplib.SMTP, polite: bool = False) -> None:
    try:
        if polite:
            smtp.quit()
        else:
            smtp.close()
    except (OSError, smtplib.SMTPException):
        smtp.close()
