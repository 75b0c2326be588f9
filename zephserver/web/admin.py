from django.contrib import admin

from zephserver.web.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "user", "name", "created", "revoked")
    list_filter = ("revoked",)
    readonly_fields = ("prefix", "digest", "created")
