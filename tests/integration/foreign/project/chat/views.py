import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from .models import Inbox, Message


def index(request):
    return render(request, "chat/index.html")


def whoami(request):
    return JsonResponse({
        "user": request.user.username,
        "remote": request.META.get("REMOTE_ADDR"),
        "host": request.get_host(),
    })


@csrf_exempt
@require_POST
def echo(request):
    return HttpResponse(request.body[::-1], content_type="application/octet-stream")


def stream(request):
    def rows():
        for i in range(int(request.GET.get("n", 5))):
            yield f"row {i}\n"

    return StreamingHttpResponse(rows(), content_type="text/plain")


@csrf_exempt
@require_POST
def broadcast(request, room_name):
    message = json.loads(request.body)["message"]
    channel_layer = get_channel_layer()
    async_to_sync(channel_layer.group_send)(
        f"chat_{room_name}", {"type": "chat.message", "message": message}
    )
    return JsonResponse({"sent": True})


@csrf_exempt
@require_POST
def notify(request, owner):
    inbox = get_object_or_404(Inbox, owner=owner)
    async_to_sync(get_channel_layer().send)(
        inbox.channels["socket"], {"type": "inbox.message", "text": request.body.decode()}
    )
    return JsonResponse({"sent": True})


def download(request):
    size = int(request.GET.get("mb", 10)) * 1024 * 1024
    response = HttpResponse(b"z" * size, content_type="application/octet-stream")
    response["Content-Disposition"] = 'attachment; filename="export.bin"'
    return response


@csrf_exempt
@require_POST
def thumbnail(request, name):
    async_to_sync(get_channel_layer().send)("thumbnails", {"type": "make.thumbnail", "name": name})
    return JsonResponse({"queued": name})


@csrf_exempt
@require_POST
def post_message(request, room_name):
    Message.objects.create(room=room_name, text=request.body.decode())
    return JsonResponse({"saved": True})
