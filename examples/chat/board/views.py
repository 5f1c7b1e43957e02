from django.conf import settings
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse


def board(request):
    try:
        login_url = reverse("login")
    except NoReverseMatch:
        login_url = settings.LOGIN_URL
    return render(request, "board/board.html", {"login_url": f"{login_url}?next=/board/"})
