"""Optional bearer-token authentication of the prediction routes (health routes stay open)."""

from __future__ import annotations

import hmac

__all__ = ["bearer_token_matches"]


def bearer_token_matches(authorization: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries `Bearer <token>`, compared in constant time."""
    if not authorization:
        return False
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    # compare_digest takes as long whatever the first differing byte: no timing hint about the token.
    return hmac.compare_digest(credentials.strip().encode(), token.encode())
