"""Django settings for zephserver. What depends on the zephserver settings file (the
database, from DATABASE_URL; the secret key) is filled in from it by
zephserver.web.django_setup, once, before django.setup()."""

SECRET_KEY = ""  # empty: the install's key, kept in DATA_DIR/secret_key
DEBUG = False
ALLOWED_HOSTS = ["*"]  # the HTTP server binds BIND_ADDRESS; Origin checks guard /ws

INSTALLED_APPS = [
    # Without autodiscovery at start: zephserver/web/urls.py loads the admin modules of
    # every app (auth's forms with them) when the first web request loads the URLs.
    "django.contrib.admin.apps.SimpleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "zephserver.web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "zephserver.web.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# DATABASES come from DATABASE_URL in the zephserver settings (zephserver/database.py).

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# The daemon configures logging itself (zephserver/logs.py); Django's records reach it
# through the root logger. Django's own configuration would add a mail handler that
# loads the debug views and a template engine at start, for an ADMINS list that is empty.
LOGGING_CONFIG = None

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
