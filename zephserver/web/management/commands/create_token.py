from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from zephserver.web.models import ApiToken


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it once on stdout."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a label for the token")

    def handle(self, *args, **options):
        try:
            user = get_user_model().objects.get(username=options["username"])
        except get_user_model().DoesNotExist:
            raise CommandError(f"no user named {options['username']!r}") from None
        record, token = ApiToken.issue(user, options["name"])
        self.stderr.write(f"token {record.prefix}… created for {user.username}; "
                          "it is shown only now")
        self.stdout.write(token)
