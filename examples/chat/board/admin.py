from django.contrib import admin

from .models import Card


@admin.register(Card)
class CardAdmin(admin.ModelAdmin):
    # Saving here (the web tier, gunicorn) pushes the change to every open board.
    list_display = ["title", "column", "author", "updated"]
    list_editable = ["column"]
