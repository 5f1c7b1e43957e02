import hashlib

from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


def hello(request):
    return HttpResponse(f"hello {request.GET.get('name', 'world')}")


@csrf_exempt
def upload(request):
    body = request.body
    return HttpResponse(f"{len(body)} {hashlib.sha256(body).hexdigest()}")


def whereami(request):
    """What Django makes of the client: its address and whether it came over TLS."""
    return HttpResponse(f"{request.META['REMOTE_ADDR']} {request.is_secure()}")


def stream(request):
    return StreamingHttpResponse(f"line {i}\n".encode() for i in range(5))


def login_as(request):
    """Log in as ``?name=`` (created on first use): sets the session cookie."""
    from django.contrib.auth import get_user_model, login

    user, _ = get_user_model().objects.get_or_create(username=request.GET["name"])
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponse(f"logged in as {user.username}")


urlpatterns = [
    path("login/", login_as),
    path("hello/", hello),
    path("whereami/", whereami),
    path("upload/", upload),
    path("djstream/", stream),
]
