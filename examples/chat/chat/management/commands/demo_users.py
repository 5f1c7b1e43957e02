"""``manage.py demo_users``: the demo's accounts (alice and bob, password ``demo-password``;
alice is staff: she may roll the workers from /fleet/ under ``make run``). For the demo only:
never run it on a real site."""

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand

DEMO_USERS = ("alice", "bob")
STAFF = ("alice",)
DEMO_PASSWORD = "demo-password"


class Command(BaseCommand):
    help = "Create (or reset) the demo users alice (staff) and bob, password 'demo-password'."

    def handle(self, *args, **options):
        for name in DEMO_USERS:
            user, created = User.objects.get_or_create(username=name)
            user.set_password(DEMO_PASSWORD)
            user.is_staff = name in STAFF
            user.save()
            self.stdout.write(f"{'created' if created else 'reset'} {name}")
