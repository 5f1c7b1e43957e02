from django.db import models


class Card(models.Model):
    """One card on the shared board."""

    COLUMNS = [("todo", "To do"), ("doing", "Doing"), ("done", "Done")]

    title = models.CharField(max_length=200)
    column = models.CharField(max_length=10, choices=COLUMNS, default="todo")
    # Set by the server (Binding.before_save), never by the client.
    author = models.CharField(max_length=150, blank=True, editable=False)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return self.title
