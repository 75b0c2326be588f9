"""The Django app: models, migrations, views, templates and management commands."""
