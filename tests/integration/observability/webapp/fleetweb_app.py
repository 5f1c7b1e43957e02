"""A tiny WSGI app for the web-tier metrics tests, wrapped as services/web should wrap Django's."""

import time

from channels_fleet.observability.web import instrument_wsgi


def raw(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/slow":
        time.sleep(0.5)  # two at once keep both sync workers busy: each serves one
    if path == "/sleep":  # /sleep?10: a request still running when the drain ends
        time.sleep(float(environ.get("QUERY_STRING") or 1))
    status = "404 Not Found" if path == "/missing" else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [b"hello\n"]


application = instrument_wsgi(raw)  # for a server that does not wrap apps itself
