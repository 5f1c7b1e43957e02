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


def stream(request):
    return StreamingHttpResponse(f"line {i}\n".encode() for i in range(5))


urlpatterns = [path("hello/", hello), path("upload/", upload), path("djstream/", stream)]
