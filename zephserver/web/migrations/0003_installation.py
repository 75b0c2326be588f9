import secrets

from django.db import migrations, models


def create_identity(apps, schema_editor):
    Installation = apps.get_model("zephweb", "Installation")
    Installation.objects.get_or_create(id=1, defaults={"cluster_id": secrets.token_hex(16)})


class Migration(migrations.Migration):

    dependencies = [
        ("zephweb", "0002_job"),
    ]

    operations = [
        migrations.CreateModel(
            name="Installation",
            fields=[
                ("id", models.PositiveSmallIntegerField(default=1, primary_key=True,
                                                        serialize=False)),
                ("cluster_id", models.CharField(max_length=64)),
                ("created", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.RunPython(create_identity, migrations.RunPython.noop),
    ]
