"""Alerts by email, sent with the smtp provider's ``SmtpNotifier`` and recorded, sent or not.

The text of an alert is built by the caller from what actually happened; this module only delivers
it: it claims the alert in ``respaldo.notificacion`` (so the same event is never mailed twice), tries
the mail server a few times, and records the outcome. When the register cannot be reached the alert
is still sent (a duplicate is better than silence) and the outcome says it was not recorded. A send
that failed stays ``failed`` in the register until :func:`resend_unsent` delivers it.
"""

from __future__ import annotations

import logging
import smtplib
import time
from dataclasses import dataclass

from respaldo.errors import RegisterError
from respaldo.register import notificacion
from respaldo.register.notificacion import Alert

log = logging.getLogger("respaldo")

#: Tries per delivery, and the pause before each retry (a mail server restarting takes seconds).
SEND_ATTEMPTS = 3
RETRY_PAUSES_SECONDS = (2.0, 5.0)


@dataclass(frozen=True)
class Channel:
    """Where alerts go: the inventory's ``alerts`` section and the register that records them."""

    smtp_conn_id: str
    recipients: list[str]
    from_email: str | None = None
    register_conn_id: str | None = None

    @classmethod
    def of(cls, settings: dict) -> Channel:
        """From the settings every task gets (see ``dag_factory``)."""
        return cls(settings["smtp_conn_id"], list(settings["alert_emails"]), settings.get("from_email"),
                   settings.get("register_conn_id"))


@dataclass(frozen=True)
class Delivery:
    """What became of one alert."""

    sent: bool
    #: Why the mail server did not take it (plain words), when it did not.
    error: str | None = None
    #: Already sent, or being sent, by another process: nothing was done here.
    duplicate: bool = False
    #: Why the attempt could not be recorded in ``respaldo.notificacion``, when it could not.
    record_error: str | None = None

    def describe(self) -> str:
        if self.duplicate:
            return "el aviso ya había sido enviado (o lo está enviando otro proceso)"
        text = "aviso enviado" if self.sent else f"el aviso NO se pudo enviar: {self.error}"
        if self.record_error:
            text += f"; no quedó constancia en respaldo.notificacion: {self.record_error}"
        return text


def _smtp_error(err: BaseException, channel: Channel) -> str:
    """The mail server's failure in words, naming the connection and where it points."""
    where = ""
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(channel.smtp_conn_id)
        where = f", {conn.host}:{conn.port}" if conn.host else ""
    except Exception:  # noqa: BLE001 - the connection itself may be what is missing
        return f"no existe o no se puede leer la conexión de correo «{channel.smtp_conn_id}» ({err})"
    detail = str(err).strip() or type(err).__name__
    server = f"el servidor de correo (conexión «{channel.smtp_conn_id}»{where})"
    if isinstance(err, smtplib.SMTPServerDisconnected):
        return f"{server} cortó la conexión: {detail}"
    if isinstance(err, smtplib.SMTPException):  # it answered, and said no
        return f"{server} rechazó el aviso: {detail}"
    if isinstance(err, OSError):
        return f"{server} no respondió: {detail}"
    return f"no se pudo enviar por {server}: {type(err).__name__}: {detail}"


def _send(alert: Alert, channel: Channel) -> tuple[int, str | None]:
    """Hand the alert to the mail server; return (tries, error or None)."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    error = None
    for attempt in range(1, SEND_ATTEMPTS + 1):
        notifier = SmtpNotifier(to=list(alert.recipients), from_email=channel.from_email, subject=alert.subject,
                                html_content=alert.body, smtp_conn_id=channel.smtp_conn_id)
        try:
            notifier.notify({})  # the text is final: nothing to render
            return attempt, None
        except Exception as err:  # noqa: BLE001 - any failure of the mail server is reported, never raised
            error = _smtp_error(err, channel)
            log.warning("Intento %d de %d de enviar el aviso «%s»: %s", attempt, SEND_ATTEMPTS, alert.subject, error)
            if attempt < SEND_ATTEMPTS:
                time.sleep(RETRY_PAUSES_SECONDS[min(attempt - 1, len(RETRY_PAUSES_SECONDS) - 1)])
    return SEND_ATTEMPTS, error


def deliver(alert: Alert, channel: Channel) -> Delivery:
    """Send ``alert`` once per event, recording the attempt; never raises."""
    record_error = None
    claimed = True
    if channel.register_conn_id:
        try:
            claimed = notificacion.claim(channel.register_conn_id, alert)
        except RegisterError as err:
            record_error = str(err)
    else:
        record_error = "no hay registro configurado"
    if not claimed:
        log.info("El aviso «%s» ya fue enviado o lo está enviando otro proceso (%s)", alert.subject, alert.key)
        return Delivery(sent=False, duplicate=True)
    tries, error = _send(alert, channel)
    if record_error is None:
        try:
            notificacion.settle(channel.register_conn_id, alert.key, tries, error)
        except RegisterError as err:
            record_error = str(err)
    delivery = Delivery(sent=error is None, error=error, record_error=record_error)
    (log.info if delivery.sent and not record_error else log.error)("Aviso «%s» a %s: %s", alert.subject,
                                                                     ", ".join(alert.recipients), delivery.describe())
    return delivery


def resend_unsent(channel: Channel, *, run_id: str | None = None) -> list[tuple[Alert, Delivery]]:
    """Try again every alert that was not sent (of one run, or all); raises RegisterError if unreadable."""
    results = []
    for alert in notificacion.unsent(channel.register_conn_id, run_id=run_id):
        retry = Channel(channel.smtp_conn_id, list(alert.recipients), channel.from_email, channel.register_conn_id)
        results.append((alert, deliver(alert, retry)))
    return results


def resend_problems(channel: Channel, *, run_id: str | None = None) -> list[str]:
    """:func:`resend_unsent`, and in words what still did not go out (or why unsent alerts could not be read)."""
    try:
        resent = resend_unsent(channel, run_id=run_id)
    except RegisterError as err:
        return [str(err)]
    return [f"aviso «{alert.subject}»: {delivery.error}" for alert, delivery in resent
            if not delivery.sent and not delivery.duplicate]
