"""API tokens: shown once, stored only as a SHA-256 digest (they are 256-bit random)."""

import hashlib
import secrets

PREFIX = "zt_"


def new_token() -> tuple[str, str, str]:
    """(token, short public prefix, digest). Only the digest and prefix are stored."""
    token = PREFIX + secrets.token_urlsafe(32)
    return token, token[:len(PREFIX) + 8], token_digest(token)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
