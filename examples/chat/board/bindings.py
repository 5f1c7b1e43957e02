"""The board's Card model bound to browsers: every change made through Django is pushed to the
"board" group, and signed-in users create, move and delete cards through the socket."""

from channels_fleet.binding import Binding

from .models import Card


class CardBinding(Binding):
    model = Card
    stream = "board"
    fields = ["title", "column", "author", "updated"]  # writable: title, column

    @classmethod
    def group_names(cls, instance):
        return ["board"]

    def has_permission(self, user, action, pk):
        if action in ("subscribe", "unsubscribe", "list"):
            return True  # Anyone may watch the board.
        if user is None or not user.is_authenticated:
            return False
        if action == "delete":
            # Staff, or the card's author (a query: this runs in a thread).
            return user.is_staff or Card.objects.filter(
                pk=pk, author=user.get_username()).exists()
        return True

    def before_save(self, instance, action):
        if action == "create":
            instance.author = self.user.get_username()
