"""Django settings for tests: the real ones with a fast password hasher."""

from settings.django_settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
