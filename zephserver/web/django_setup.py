"""Configure Django from zephserver settings (call before importing models)."""

import os
import secrets

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


def setup_django(settings: Settings) -> None:
    """Point Django at DJANGO_SETTINGS_MODULE with DATA_DIR and the secret key, then setup."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings.DJANGO_SETTINGS_MODULE
    os.environ["ZEPHSERVER_DATA_DIR"] = settings.DATA_DIR
    os.environ["ZEPHSERVER_SECRET_KEY"] = secret_key(settings.DATA_DIR)
    import django

    django.setup()
