"""WSGI entry point: what ``channels-fleet web chat_project.wsgi:application`` serves."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chat_project.settings")

application = get_wsgi_application()
