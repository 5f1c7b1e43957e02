from pathlib import Path

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from .roll import request_roll


def fleet(request):
    return render(request, "fleetview/fleet.html", {
        "can_roll": bool(settings.CHAT_ROLL_SOCKET) and request.user.is_staff,
        "roll_here": bool(settings.CHAT_ROLL_SOCKET),
    })


@require_POST
def roll(request):
    """Ask ``make run`` to roll its workers (its control socket, CHAT_ROLL_SOCKET): staff only,
    CSRF-checked like every POST. Answers once the roll has started; the page watches it."""
    if not request.user.is_staff:
        return JsonResponse({"error": "only staff may roll the workers (sign in as alice)"},
                            status=403)
    if not settings.CHAT_ROLL_SOCKET:
        return JsonResponse({"error": "no `make run` here to roll (CHAT_ROLL_SOCKET is unset): "
                                      "roll the workers the way they were deployed"}, status=503)
    lines = []
    started = request_roll(Path(settings.CHAT_ROLL_SOCKET), lines.append,
                           first_line_only=True, timeout=10)
    said = lines[-1] if lines else "no answer"
    if started:
        return JsonResponse({"started": said}, status=202)
    return JsonResponse({"error": said}, status=409 if said.startswith("busy") else 503)
