"""channels-fleet: Django Channels at scale.

Daphne interface processes hold the sockets, worker processes run the project's unchanged
Channels consumers, and a Redis Cluster channel layer carries everything between them.
"""

__version__ = "0.1.0"
