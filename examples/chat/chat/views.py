from channels.layers import get_channel_layer
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from channels_fleet.bridge import run_sync

from . import rooms
from .status import served_by


def index(request):
    return render(request, "chat/index.html")


def room(request, room):
    # Served by a worker through an interface (request.scope["fleet"]) or by the web tier.
    return render(request, "chat/room.html", {
        "room": room, "served_by": served_by(getattr(request, "scope", None))})


@require_POST
@login_required
def post(request, room):
    """The room's form without JavaScript (and a view triggering the background channel)."""
    message = request.POST.get("message", "").strip()
    if message:
        layer = get_channel_layer()
        send = lambda: rooms.post(  # noqa: E731
            layer, room, rooms.user_name(request.user), message, via="form")
        run_sync(send)  # on the server's loop under ASGI, one loop thread under gunicorn
    return redirect("room", room=room)
