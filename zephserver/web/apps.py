from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "zephserver.web"
    label = "zephweb"
    verbose_name = "zephserver"
    default_auto_field = "django.db.models.BigAutoField"
