"""Emails over SMTP with the standard library, in a worker thread (smtplib blocks)."""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import socket
import threading
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
        # smtplib's timeout bounds each step (connect, each read); a server that trickles its
        # replies would pass them all, so the whole exchange is bounded too: the connection is
        # shut at the deadline, and the step under way fails. An attempt must end well within
        # its lease, or another worker would send the email again meanwhile.
        smtp = smtplib.SMTP(timeout=self._timeout)
        expired = threading.Event()
        deadline = threading.Timer(self._timeout, _shut, args=(smtp, expired))
        deadline.start()
        try:
            smtp.connect(self._host, self._port)
            with smtp:
                smtp.send_message(message)
        except (smtplib.SMTPException, OSError) as error:
            if expired.is_set():
                raise MailerError(f"timed out after {self._timeout:g} s") from error
            raise MailerError(f"{type(error).__name__}: {error}") from error
        finally:
            deadline.cancel()
            smtp.close()


def _shut(smtp: smtplib.SMTP, expired: threading.Event) -> None:
    """Shut the connection down under a step blocked on it (closing alone would not wake it)."""
    expired.set()
    sock = smtp.sock
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
