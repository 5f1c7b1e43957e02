from django.apps import AppConfig


class FleetViewConfig(AppConfig):
    name = "fleetview"
