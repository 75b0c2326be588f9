"""Configure Django from the zephserver settings object, once per process.

The daemon does it at start (``infra.bootstrap.Daemon(prepare=...)``), before any
service runs; ``zephserver-admin`` before a management command. The Django settings
module (DJANGO_SETTINGS_MODULE) holds what does not depend on the install; what does
(the SQLite file under DATA_DIR, the secret key) is filled in here, from the settings
object, never through environment variables.
"""

import hashlib
import importlib
import logging
import os
import secrets
from typing import Any

from zephserver import deferred_imports
from zephserver.config import Settings
from zephserver.database import IDLE_IN_TRANSACTION, django_database
from zephserver.infra.cluster import node_urls

log = logging.getLogger(__name__)


def secret_key(data_dir: str) -> str:
    """The install's Django secret key, created once (mode 0600) under DATA_DIR."""
    path = os.path.join(data_dir, "secret_key")
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        pass
    os.makedirs(data_dir, exist_ok=True)
    key = secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
    except FileExistsError:  # pragma: no cover - lost a race with another process
        with open(path) as f:
            return f.read().strip()
    return key


def cluster_secret_key(cluster_secret: str) -> str:
    """The Django key every node of a cluster derives alike from CLUSTER_SECRET (so a
    login made on one node is valid on every node), and nothing else can."""
    return hashlib.sha256(f"zephserver-django\0{cluster_secret}".encode()).hexdigest()


def django_values(settings: Settings) -> dict[str, Any]:
    """DJANGO_SETTINGS_MODULE's settings completed from ``settings``: the database
    (DATABASE_URL) and the secret key."""
    module = importlib.import_module(settings.DJANGO_SETTINGS_MODULE)
    values = {k: v for k, v in vars(module).items() if k.isupper()}
    if settings.SECRET_KEY:
        values["SECRET_KEY"] = settings.SECRET_KEY
    elif len(settings.CLUSTER_SERVER_LIST) >= 2 and settings.CLUSTER_SECRET:
        values["SECRET_KEY"] = cluster_secret_key(settings.CLUSTER_SECRET)
    elif not values.get("SECRET_KEY"):
        values["SECRET_KEY"] = secret_key(settings.DATA_DIR)
    # a node paused in a transaction is cut off well before the others declare it lost
    idle = min(IDLE_IN_TRANSACTION, settings.NODE_LOST_AFTER / 3)
    values["DATABASES"] = {"default": django_database(settings.DATABASE_URL,
                                                      settings.DATA_DIR, idle)}
    # where browsers reach each node: the page carries them, so it can move to another
    # node even if its own dies before the page ever connected
    values["ZEPH_NODE_URLS"] = (list(node_urls(settings).values())
                                if len(settings.CLUSTER_SERVER_LIST) >= 2 else [])
    return values


def setup_django(settings: Settings) -> None:
    """Configure Django from ``settings`` and set it up; a second call does nothing."""
    import django
    from django.conf import settings as django_settings

    if django_settings.configured:
        return
    django_settings.configure(**django_values(settings))
    deferred_imports.defer()  # before Django's models import its backends
    django.setup()


def prepare_database(settings: Settings) -> dict:
    """What the daemon does before any service runs: Django set up, the database
    reachable and its schema current. The embedded SQLite is migrated here (a copy of a
    file that holds data is kept first); a server database is migrated by its operator.

    Returns ``{"cluster_identity": ...}``: the database's id, which the cluster keys
    are derived from (a node of another database is refused by the others).

    Raises:
        HaltServer: the database cannot be reached (exit 1), or a server database has
            pending migrations (exit 6, naming ``zephserver-admin migrate``).
    """
    setup_django(settings)
    from django.db import DatabaseError, connection

    from zephserver.database import redact
    from zephserver.errors import ExitCode, HaltServer

    where = redact(settings.DATABASE_URL)
    executor, pending = None, []
    try:
        connection.ensure_connection()
        if not _all_applied(connection):
            from django.db.migrations.executor import MigrationExecutor

            executor = MigrationExecutor(connection)
            pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HaltServer(f"database {where} is unreachable: {reason}", ExitCode.FAILED) \
            from None
    try:
        if pending:
            _migrate(settings, connection, executor, pending, where)
        from zephserver.web.models import installation_id

        return {"cluster_identity": installation_id()}
    finally:
        connection.close()  # the main thread does not use it again


def _all_applied(connection: Any) -> bool:
    """Whether every migration on disk is recorded as applied, from the directory
    listings and one query: Django's loader imports every migration module to build the
    graph (4 MiB the daemon would keep for nothing). False when unsure (no table yet,
    MIGRATION_MODULES, a squashed migration): the full check then decides."""
    import pkgutil
    from importlib.util import find_spec

    from django.apps import apps
    from django.conf import settings as django_settings
    from django.db import DatabaseError

    if getattr(django_settings, "MIGRATION_MODULES", None):
        return False
    on_disk = set()
    for app in apps.get_app_configs():
        try:
            spec = find_spec(f"{app.name}.migrations")
        except ImportError:
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue  # an app without migrations
        # the names Django's loader takes (django.db.migrations.loader)
        on_disk |= {(app.label, m.name) for m in pkgutil.iter_modules(
            spec.submodule_search_locations) if not m.ispkg and m.name[0] not in "_~"}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT app, name FROM django_migrations")
            applied = set(cursor.fetchall())
    except DatabaseError:
        return False  # (autocommit: a failed query leaves no broken transaction)
    return on_disk <= applied


def _migrate(settings: Settings, connection: Any, executor: Any, pending: list,
             where: str) -> None:
    """Migrate the embedded SQLite (a copy kept first when it holds data); a server
    database is its operator's: HaltServer, exit 6."""
    from django.core.management import call_command

    from zephserver.database import is_embedded
    from zephserver.errors import ExitCode, HaltServer

    if not is_embedded(settings.DATABASE_URL):
        raise HaltServer(f"database {where} has {len(pending)} pending migration(s): "
                         "run `zephserver-admin --settings FILE migrate` once, with "
                         "these settings, then start again", ExitCode.BAD_SETTINGS)
    copy = _copy_aside(connection.settings_dict["NAME"]) \
        if executor.loader.applied_migrations else None
    call_command("migrate", interactive=False, verbosity=0)
    log.info("database %s: %d migration(s) applied%s", where, len(pending),
             f" (the file before them is kept as {copy})" if copy else "")


def _copy_aside(path: str) -> str:
    """A consistent copy of a SQLite file (WAL included) beside it; its path."""
    import sqlite3
    import time

    copy = f"{path}.before-migrate-{time.strftime('%Y%m%d-%H%M%S')}"
    source, target = sqlite3.connect(path), sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    return copy
