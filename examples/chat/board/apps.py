from django.apps import AppConfig


class BoardConfig(AppConfig):
    name = "board"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Connect the binding's signals in every process: workers, and the web tier (admin edits
        # and views made under gunicorn are pushed too).
        from . import bindings  # noqa: F401
