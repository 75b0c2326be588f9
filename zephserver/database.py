"""The database named by DATABASE_URL, as Django's ``DATABASES["default"]``.

- ``None`` (the default): the embedded SQLite, ``DATA_DIR/zephserver.sqlite3``, for one
  node (migrated by the daemon itself at start);
- ``sqlite:///relative/file.sqlite3`` or ``sqlite:////absolute/file.sqlite3``;
- ``postgresql://user:password@host:port/name?option=value`` (also ``postgres://``):
  shared by every node of a cluster, migrated by the operator (``zephserver-admin
  migrate``). ``CONN_MAX_AGE`` in the query sets Django's connection life (default: one
  connection per thread, kept); every other option (``sslmode``, ``connect_timeout``...)
  goes to the driver.

A URL shown in a message never carries its password (``redact``).
"""

import os
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

SQLITE_OPTIONS = {
    # WAL lets readers run beside the writer; IMMEDIATE avoids upgrade deadlocks. Each
    # thread's connection keeps a page cache of 64 KiB, not SQLite's 2 MiB (the kernel's
    # page cache holds the file anyway): a dozen of them filled slowly, and the daemon
    # grew by 5.8 MiB over 20,000 jobs with 2 MiB, 0.5 MiB more over 10,000 with 256 KiB
    # than with 64; no cost in jobs/s.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-64;",
    "transaction_mode": "IMMEDIATE",
    # A writer waits this long for a lock another process holds; then its batch is
    # refused with -32003 "busy" and the events in it tried again (bounded, never a
    # wait that outlasts the client's own reply timeout).
    "timeout": 5,
    # Compiled statements kept per connection (Python's default is 128): a connection
    # uses about ten again and again; every other statement it ever ran stayed compiled.
    "cached_statements": 32,
}
POSTGRES_SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT = 5  # seconds: an unreachable server is reported, not waited on
IDLE_IN_TRANSACTION = 10.0  # seconds (at most; a short NODE_LOST_AFTER makes it shorter)


class DatabaseUrlError(ValueError):
    pass


def in_shapes(ids: list[int]) -> list[int]:
    """Positive ``ids`` for an ``IN (...)``, padded with ids no row has (-1, -2...) to the
    next power of two: the SQL then takes a handful of shapes, not one per length. Each
    shape is a statement every thread's SQLite connection keeps prepared (up to 128, a
    long IN among the largest): one per length grew the daemon for thousands of jobs."""
    if len(ids) <= 1:
        return ids
    return [*ids, *range(-1, len(ids) - (1 << (len(ids) - 1).bit_length()) - 1, -1)]


def unavailable_reason(exc: BaseException) -> str | None:
    """Why the database cannot be used now, if ``exc`` says so (a Django DatabaseError
    that is about the connection: the server stopped, a network cut); else None."""
    from django.db import InterfaceError, OperationalError

    if not isinstance(exc, OperationalError | InterfaceError):
        return None
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def redact(url: str | None) -> str:
    """``url`` without its password."""
    if not url:
        return "the embedded SQLite database"
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def is_embedded(url: str | None) -> bool:
    """Whether the database is a SQLite file of this node (not shareable by nodes)."""
    return url is None or urlsplit(url).scheme == "sqlite"


def django_database(url: str | None, data_dir: str,
                    idle_in_transaction: float = IDLE_IN_TRANSACTION) -> dict[str, Any]:
    """Django's settings for the database ``url`` names. On PostgreSQL a session idle
    inside a transaction for ``idle_in_transaction`` seconds is ended by the server: a
    node paused (SIGSTOP, a hung disk) while it plans must not hold the cluster's plan
    lock and its row locks for longer (the URL's own ``options`` wins).

    Raises:
        DatabaseUrlError: a URL zephserver cannot use, saying why.
    """
    if url is None:
        return _sqlite(os.path.join(data_dir, "zephserver.sqlite3"))
    if not isinstance(url, str):
        raise DatabaseUrlError("must be None or a URL string")
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        if parts.netloc or not parts.path.startswith("/") or len(parts.path) < 2:
            raise DatabaseUrlError("a SQLite URL is sqlite:///relative/file or "
                                   "sqlite:////absolute/file")
        return _sqlite(os.path.abspath(unquote(parts.path[1:])))
    if parts.scheme in POSTGRES_SCHEMES:
        name = unquote(parts.path.lstrip("/"))
        if not name or not parts.hostname:
            raise DatabaseUrlError("a PostgreSQL URL is postgresql://user:password@host:"
                                   "port/database")
        try:
            port = parts.port
        except ValueError:
            raise DatabaseUrlError("the port must be a number") from None
        options: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
        conn_max_age: int | None = None
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "CONN_MAX_AGE":
                if not value.isdigit():
                    raise DatabaseUrlError("CONN_MAX_AGE must be a number of seconds")
                conn_max_age = int(value)
            else:
                options[key] = value
        options.setdefault("options", "-c idle_in_transaction_session_timeout="
                           f"{max(1, round(idle_in_transaction * 1000))}")
        return {"ENGINE": "django.db.backends.postgresql", "NAME": name,
                "USER": unquote(parts.username or ""),
                "PASSWORD": unquote(parts.password or ""), "HOST": parts.hostname,
                "PORT": str(port or 5432), "OPTIONS": options,
                "CONN_MAX_AGE": conn_max_age}
    raise DatabaseUrlError(f"scheme {parts.scheme!r} is not supported (sqlite:// or "
                           "postgresql://)")


def _sqlite(path: str) -> dict[str, Any]:
    # Keep each thread's connection: reconnecting per task costs more than the task.
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": path,
            "OPTIONS": dict(SQLITE_OPTIONS), "CONN_MAX_AGE": None}
