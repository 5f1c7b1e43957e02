"""The worker side: runs the project's ASGI application for connections relayed from interfaces."""
