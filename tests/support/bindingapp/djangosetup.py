"""Configure Django once for the test process, from support.bindingapp.settings."""

import atexit
import os

import django
from django.conf import settings


def setup() -> None:
    if not settings.configured:
        from . import settings as values

        settings.configure(**{k: getattr(values, k) for k in dir(values) if k.isupper()})
        if "BINDINGAPP_DB" not in os.environ:
            atexit.register(_remove, values.DATABASES["default"]["NAME"])
    django.setup()


def create_tables() -> None:
    """Tables straight from the models (the app has no migrations)."""
    from django.db import connection

    from .models import Board, Card, Note

    existing = set(connection.introspection.table_names())
    with connection.schema_editor() as editor:
        for model in (Board, Card, Note):
            if model._meta.db_table not in existing:
                editor.create_model(model)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
