"""Session manager (the "auth" service): who is on a connection, from a Django login
session cookie, an API bearer token, or (on the REST faces) a token as a Basic password.
The interactive sessions users launch are elsewhere (``jobs.interactive``).

Lookups hit the database and so run off the event loop (the websocket service calls
``authenticate`` from its auth executor, the router calls ``recheck`` from task threads).
``recheck`` answers from a cache with a short life (SESSION_CACHE_TTL), so a logout or a
revoked token takes effect within seconds without a database hit per message.
"""

import base64
import logging
import threading
import time
from types import SimpleNamespace

from zephserver.database import unavailable_reason
from zephserver.errors import ServiceUnavailable
from zephserver.infra.service import Service
from zephserver.task.base import ANONYMOUS, UserInfo

log = logging.getLogger(__name__)

# A credential as the cache keys it: ("session", session_key), ("token", digest) or None.
Credential = tuple[str, str] | None


class AuthenticationFailed(Exception):
    """A credential was presented and is not valid (a wrong or revoked bearer token)."""


def _basic_credentials(value: str) -> tuple[str, str]:
    """(user name, token) from the value of a ``Basic`` Authorization header."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise AuthenticationFailed("Basic credentials must be base64 of 'user:token'") \
            from None
    username, sep, token = decoded.partition(":")
    if not sep or not username or not token:
        raise AuthenticationFailed("Basic credentials must be 'user:token' (an API token "
                                   "as the password)")
    return username, token


class SessionManagerService(Service):
    name = "auth"  # not "sessions": those are the interactive apps (jobs.interactive)
    announces_ready = True

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[tuple[str, str], tuple[UserInfo, float]] = {}
        self._lock = threading.Lock()

    def main(self) -> None:
        assert self.ctx is not None
        self.ttl = self.ctx.settings.SESSION_CACHE_TTL
        self.ctx.ready()
        self._disabled.wait()

    # -- API (any thread but the loop's: these may query the database) --------------------

    def authenticate(self, cookies: dict[str, str], authorization: str | None,
                     allow_basic: bool = False) -> tuple[UserInfo, Credential]:
        """Resolve a request's credentials. Blocking.

        With ``allow_basic`` (the REST faces, for deploy tools that can only send Basic
        credentials), ``Basic`` carries an API token as the password and its owner's
        user name.

        Raises:
            AuthenticationFailed: a token was sent and is not valid.
        """
        if authorization:
            scheme, _, value = authorization.partition(" ")
            scheme = scheme.lower()
            username = None
            if scheme == "basic" and allow_basic:
                username, token = _basic_credentials(value)
            elif scheme == "bearer" and value.strip():
                token = value.strip()
            else:
                raise AuthenticationFailed("Authorization must be 'Bearer <token>'" + (
                    " or 'Basic' with a token as the password" if allow_basic else ""))
            from zephserver.web.tokens import token_digest

            credential = ("token", token_digest(token))
            user = self._resolve(credential)
            if not user.is_authenticated:
                raise AuthenticationFailed("invalid or revoked API token")
            if username is not None and username != user.username:
                raise AuthenticationFailed("the Basic user name is not the token's owner")
            return user, credential
        session_key = cookies.get("sessionid")
        if session_key:
            credential = ("session", session_key)
            user = self._resolve(credential)
            if user.is_authenticated:
                return user, credential
        return ANONYMOUS, None

    def recheck(self, credential: Credential) -> UserInfo:
        """The user behind ``credential`` now, from the cache while it is fresh. Blocking."""
        if credential is None:
            return ANONYMOUS
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(credential)
        if cached and cached[1] > now:
            return cached[0]
        return self._resolve(credential)

    def _resolve(self, credential: tuple[str, str]) -> UserInfo:
        from django.db import DatabaseError, close_old_connections, connection

        kind, value = credential
        # A connection opened before the server restarted fails at its first use: once
        # more on a new one (a server that is down fails that one too, and says so).
        stale_possible = connection.connection is not None
        while True:
            try:
                user = self._lookup_token(value) if kind == "token" else \
                    self._lookup_session(value)
                break
            except DatabaseError as exc:
                why = unavailable_reason(exc)
                if why is None:
                    raise
                connection.close()
                if not stale_possible:
                    raise ServiceUnavailable(f"the database is unavailable: {why}") from None
                stale_possible = False
            finally:
                close_old_connections()
        with self._lock:
            self._cache[credential] = (user, time.monotonic() + self.ttl)
            if len(self._cache) > 10000:  # bound memory: drop expired entries
                now = time.monotonic()
                self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
        return user

    @staticmethod
    def _as_info(user: object) -> UserInfo:
        if not getattr(user, "is_authenticated", False) or not getattr(user, "is_active", True):
            return ANONYMOUS
        groups = tuple(user.groups.values_list("name", flat=True))  # type: ignore
        return UserInfo(user.pk, user.get_username(), bool(user.is_staff),  # type: ignore
                        bool(user.is_superuser), groups)  # type: ignore[attr-defined]

    def _lookup_session(self, session_key: str) -> UserInfo:
        from django.contrib.auth import get_user
        from django.contrib.sessions.backends.db import SessionStore

        # get_user also checks the session's password hash, so a password change logs out.
        request = SimpleNamespace(session=SessionStore(session_key))
        return self._as_info(get_user(request))

    def _lookup_token(self, digest: str) -> UserInfo:
        from zephserver.web.models import ApiToken

        token = (ApiToken.objects.select_related("user")
                 .filter(digest=digest, revoked__isnull=True).first())
        return self._as_info(token.user) if token else ANONYMOUS
