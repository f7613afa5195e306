"""Signed strings handed to clients: ``<payload, base64url>.<HMAC-SHA256, first 16 bytes>``.

Pagination cursors and consistency tokens are made this way with ``CURSOR_SECRET``: a client
may keep and send one back, but cannot make or alter one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _signature(secret: bytes, payload: bytes) -> bytes:
    return _encode(hmac.new(secret, payload, hashlib.sha256).digest()[:16]).encode()


def sign(secret: bytes, payload: bytes) -> str:
    """``payload`` as a string that only a holder of ``secret`` could have made."""
    return f"{_encode(payload)}.{_signature(secret, payload).decode()}"


def unsign(secret: bytes, signed: str) -> bytes | None:
    """The payload of a string :func:`sign` made with ``secret``; None for anything else."""
    body, _, signature = signed.partition(".")
    if not (body.isascii() and signature.isascii()):
        return None
    try:
        payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (ValueError, binascii.Error):
        return None
    if not hmac.compare_digest(signature.encode(), _signature(secret, payload)):
        return None
    return payload
