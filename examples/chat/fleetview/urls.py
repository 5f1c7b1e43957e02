from django.urls import path

from . import views

urlpatterns = [
    path("fleet/", views.fleet, name="fleet"),
    path("fleet/roll/", views.roll, name="fleet-roll"),
]
