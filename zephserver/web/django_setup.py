"""Configure Django from the zephserver settings object, once per process.

The daemon does it at start (``infra.bootstrap.Daemon(prepare=...)``), before any
service runs; ``zephserver-admin`` before a management command. The Django settings
module (DJANGO_SETTINGS_MODULE) holds what does not depend on the install; what does
(the SQLite file under DATA_DIR, the secret key) is filled in here, from the settings
object, never through environment variables.
"""

import importlib
import os
import secrets
from typing import Any

from zephserver.config import Settings


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


def django_values(settings: Settings) -> dict[str, Any]:
    """DJANGO_SETTINGS_MODULE's settings completed from ``settings``."""
    module = importlib.import_module(settings.DJANGO_SETTINGS_MODULE)
    values = {k: v for k, v in vars(module).items() if k.isupper()}
    if not values.get("SECRET_KEY"):
        values["SECRET_KEY"] = secret_key(settings.DATA_DIR)
    databases = {alias: dict(db) for alias, db in values.get("DATABASES", {}).items()}
    default = databases.setdefault("default", {"ENGINE": "django.db.backends.sqlite3"})
    if default.get("ENGINE", "").endswith("sqlite3") and not default.get("NAME"):
        default["NAME"] = os.path.join(settings.DATA_DIR, "zephserver.sqlite3")
    values["DATABASES"] = databases
    return values


def setup_django(settings: Settings) -> None:
    """Configure Django from ``settings`` and set it up; a second call does nothing."""
    import django
    from django.conf import settings as django_settings

    if django_settings.configured:
        return
    django_settings.configure(**django_values(settings))
    django.setup()
