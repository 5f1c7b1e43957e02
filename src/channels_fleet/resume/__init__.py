"""Resumable WebSocket sessions (``channels-fleet.resume.v1``, docs/resume-protocol.md).

``envelope``: the wire format, pure; ``buffers``: one session's sequence state (``Outbox``,
``Inbox``), pure; ``client``: ``FleetSocket``, the Python client. The interface's side uses the
first two; the browser's client is ``static/channels_fleet/fleet-socket.js``.
"""
