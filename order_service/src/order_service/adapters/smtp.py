"""Emails over SMTP with the standard library, in a worker thread (smtplib blocks)."""

from __future__ import annotations

import asyncio
import smtplib
from email.message import EmailMessage
from email.utils import make_msgid

from order_service.service_layer.notification_ports import Mailer, MailerError


class SmtpMailer(Mailer):
    """One SMTP connection per email: sends are rare, and a fresh connection never goes stale."""

    def __init__(self, *, host: str, port: int, sender: str, timeout: float = 10.0) -> None:
        self._host = host
        self._port = port
        self._sender = sender
        self._timeout = timeout

    async def send(self, *, recipient: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = recipient
        message["Subject"] = subject
        message["Message-ID"] = make_msgid(domain="tienda.local")
        message.set_content(body)
        await asyncio.to_thread(self._send, message)

    def _send(self, message: EmailMessage) -> None:
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                smtp.send_message(message)
        except smtplib.SMTPException as error:
            raise MailerError(f"{type(error).__name__}: {error}") from error
