from django.db import models


class Message(models.Model):
    room = models.CharField(max_length=100, db_index=True)
    author = models.CharField(max_length=150, blank=True)
    text = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "id"]


class Inbox(models.Model):
    """Where a user's open socket can be reached: the consumer's channel name."""

    owner = models.CharField(max_length=150, unique=True)
    channels = models.JSONField(default=dict)
