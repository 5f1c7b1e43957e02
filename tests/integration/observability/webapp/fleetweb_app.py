"""A tiny WSGI app for the web-tier metrics tests, wrapped as services/web should wrap Django's."""

from channels_fleet.web_metrics import instrument_wsgi


def raw(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("boom")
    status = "404 Not Found" if path == "/missing" else "200 OK"
    start_response(status, [("Content-Type", "text/plain")])
    return [b"hello\n"]


application = instrument_wsgi(raw)  # for a server that does not wrap apps itself
