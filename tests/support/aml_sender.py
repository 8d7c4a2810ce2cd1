"""An AML sender that signs its deliveries as docs/configuration.md says (aml.hmac_secret), written from the
documentation rather than from web.auth, so a test with it checks the service against the documented format."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time


def signed_headers(
    secret: str, body: bytes, *, sent_at: float | None = None, nonce: str | None = None
) -> dict[str, str]:
    """X-AML-Timestamp, X-AML-Nonce (new for every delivery unless given) and X-AML-Signature for one body."""
    timestamp = str(int(time.time() if sent_at is None else sent_at))
    nonce = nonce or secrets.token_urlsafe(18)
    signed = f"{timestamp}\n{nonce}\n".encode() + body
    signature = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return {"X-AML-Timestamp": timestamp, "X-AML-Nonce": nonce, "X-AML-Signature": signature}
