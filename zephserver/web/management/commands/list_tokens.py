from django.core.management.base import BaseCommand

from zephserver.web.models import ApiToken


class Command(BaseCommand):
    help = "List API tokens (prefix, user, name, created, revoked); never the tokens."

    def handle(self, *args, **options):
        for t in ApiToken.objects.select_related("user"):
            revoked = t.revoked.isoformat(timespec="seconds") if t.revoked else "active"
            self.stdout.write(f"{t.prefix}\t{t.user.username}\t{t.name}\t"
                              f"{t.created.isoformat(timespec='seconds')}\t{revoked}")
