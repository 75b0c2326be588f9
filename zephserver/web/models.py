"""Models of the zephserver app."""

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """A bearer token for scripts; the token itself is never stored, only its digest."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE,
                             related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, db_index=True)
    digest = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    revoked = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        state = "revoked" if self.revoked else "active"
        return f"{self.prefix}… ({self.user}, {state})"

    @classmethod
    def issue(cls, user: object, name: str = "") -> tuple["ApiToken", str]:
        """Create a token for ``user``; returns the record and the token (shown once)."""
        from zephserver.web.tokens import new_token

        token, prefix, digest = new_token()
        return cls.objects.create(user=user, name=name, prefix=prefix, digest=digest), token
