from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Card",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("title", models.CharField(max_length=200)),
                ("column", models.CharField(
                    choices=[("todo", "To do"), ("doing", "Doing"), ("done", "Done")],
                    default="todo", max_length=10)),
                ("author", models.CharField(blank=True, editable=False, max_length=150)),
                ("updated", models.DateTimeField(auto_now=True)),
            ],
            options={"ordering": ["pk"]},
        ),
    ]
