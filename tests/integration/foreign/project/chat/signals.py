from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db.models.signals import post_save
from django.dispatch import receiver

from .models import Message

channel_layer = get_channel_layer()


@receiver(post_save, sender=Message)
def announce_message(sender, instance, created, **kwargs):
    if created and instance.room.startswith("announced"):
        async_to_sync(channel_layer.group_send)(
            f"chat_{instance.room}", {"type": "chat.message", "message": f"saved: {instance.text}"}
        )
