import getpass
import os

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = ("Create a user. The password comes from $ZEPHSERVER_PASSWORD or is asked for; "
            "--staff makes a staff user (can see everyone's work and the admin).")

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--staff", action="store_true")
        parser.add_argument("--superuser", action="store_true")

    def handle(self, *args, **options):
        users = get_user_model()
        name = options["username"]
        if users.objects.filter(username=name).exists():
            raise CommandError(f"user {name!r} already exists")
        password = (os.environ.get("ZEPHSERVER_PASSWORD")
                    or getpass.getpass(f"password for {name}: "))
        user = users(username=name, is_staff=options["staff"] or options["superuser"],
                     is_superuser=options["superuser"])
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        user.set_password(password)
        user.save()
        self.stdout.write(f"created user {name}")
