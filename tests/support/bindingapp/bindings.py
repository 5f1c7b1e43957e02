from channels_fleet.binding import Binding

from .models import Card, Note


class CardBinding(Binding):
    model = Card
    stream = "cards"
    fields = ["board", "title", "column", "created"]
    track_moves = True

    @classmethod
    def group_names(cls, instance):
        return [f"board-{instance.board_id}"]

    def has_permission(self, user, action, pk):
        if user is None or not user.is_authenticated:
            return False
        # Anyone signed in may read and write; only staff may delete.
        return action != "delete" or user.is_staff

    def before_save(self, instance, action):
        # A server-side rule: the secret is set by the server, never by the client.
        if action == "create":
            instance.secret = f"made by {self.user.username}"


class NoteBinding(Binding):
    model = Note
    stream = "notes"
    exclude = ["private"]

    @classmethod
    def group_names(cls, instance):
        return ["notes"]

    def has_permission(self, user, action, pk):
        return True
