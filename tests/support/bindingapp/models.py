from django.db import models


class Board(models.Model):
    name = models.CharField(max_length=50)

    class Meta:
        app_label = "bindingapp"


class Card(models.Model):
    board = models.ForeignKey(Board, on_delete=models.CASCADE)
    title = models.CharField(max_length=100)
    column = models.CharField(max_length=20, default="todo")
    # Never bound: must not reach clients nor be writable by them.
    secret = models.CharField(max_length=50, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        app_label = "bindingapp"


class Note(models.Model):
    text = models.CharField(max_length=100)
    private = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        app_label = "bindingapp"
