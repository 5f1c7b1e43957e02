import os

from django.http import HttpResponse
from django.urls import path


def hello(request):
    return HttpResponse(f"hello from {os.getpid()}")


urlpatterns = [path("hello/", hello)]
