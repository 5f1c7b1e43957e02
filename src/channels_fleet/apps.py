"""channels_fleet as a Django app: only so ``django.contrib.staticfiles`` finds
``static/channels_fleet/fleet-socket.js`` (the browser's resume client) when "channels_fleet"
is in INSTALLED_APPS. It has no models and does nothing at start-up."""

from __future__ import annotations

from django.apps import AppConfig


class ChannelsFleetConfig(AppConfig):
    """Serves ``channels_fleet/fleet-socket.js`` and ``fleet-socket.mjs`` as static files."""

    name = "channels_fleet"
    verbose_name = "channels-fleet"
