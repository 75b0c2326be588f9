from django.core.management.base import BaseCommand, CommandError

from zephserver.web.models import ApiToken


class Command(BaseCommand):
    help = "Revoke API tokens by prefix (as listed by list_tokens) or all of a user's (--user)."

    def add_arguments(self, parser):
        parser.add_argument("prefix", nargs="?")
        parser.add_argument("--user", help="revoke every token of this user")

    def handle(self, *args, **options):
        tokens = ApiToken.objects.filter(revoked__isnull=True)
        if options["user"]:
            tokens = tokens.filter(user__username=options["user"])
        elif options["prefix"]:
            tokens = tokens.filter(prefix=options["prefix"].rstrip("…"))
        else:
            raise CommandError("give a token PREFIX or --user USERNAME")
        count = ApiToken.revoke(tokens)  # and every token made with them
        if not count:
            raise CommandError("no active token matched")
        self.stdout.write(f"revoked {count} token(s)")
