from django.apps import AppConfig


class BindingAppConfig(AppConfig):
    name = "support.bindingapp"

    def ready(self) -> None:
        # Every process of the project (worker, web tier) connects the bindings' signals.
        from . import bindings  # noqa: F401
