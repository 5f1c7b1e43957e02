"""The fleet, live: every interface and worker of this deployment, read from their heartbeats
with ``channels_fleet.fleet_status()``, pushed to the page over a WebSocket every second."""
