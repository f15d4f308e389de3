"""Keep secrets out of logs and error messages: credentials in URLs are replaced by ``***``.

Camera URLs carry passwords (``rtsp://admin:hunter2@10.0.0.5/live``); every line that names an
input goes through :func:`redact`, and :class:`RedactingFilter` does the same for any log record
(installed on the handlers of ``perception`` by the command line), so a secret never reaches a log.
"""

from __future__ import annotations

import logging
import re

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^\s/@:]*):(?P<secret>[^\s/@]*)@")
"""``scheme://user:secret@`` (the password is anything up to the ``@`` that ends the user info)."""
_SECRET_QUERY = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|token|secret|key|auth)=)(?P<secret>[^&\s#]*)",
                           re.IGNORECASE)
"""``?password=...`` style query parameters some cameras take instead of user info."""

MASK = "***"


def redact(text: str) -> str:
    """``text`` with URL passwords and secret query values replaced by ``***``.

    ``rtsp://admin:hunter2@10.0.0.5:554/live?token=abc`` → ``rtsp://admin:***@10.0.0.5:554/live?token=***``.
    Text without credentials is returned unchanged.
    """
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}{MASK}", text)


class RedactingFilter(logging.Filter):
    """A logging filter that redacts credentials in the formatted message of every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to report
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
