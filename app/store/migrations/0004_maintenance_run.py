from django.db import migrations, models
from django.utils import timezone


def seed(apps, schema_editor):
    """Count the schema's creation (or this upgrade) as the last purge, so "no purge for hours"
    is measured from when purging became possible, not from the epoch."""
    MaintenanceRun = apps.get_model("kvstore", "MaintenanceRun")
    MaintenanceRun.objects.get_or_create(
        task="purge-idempotency", defaults={"succeeded_at": timezone.now(), "deleted": 0}
    )


class Migration(migrations.Migration):
    dependencies = [("kvstore", "0003_exact_values_and_outcomes")]

    operations = [
        migrations.CreateModel(
            name="MaintenanceRun",
            fields=[
                ("task", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("succeeded_at", models.DateTimeField()),
                ("deleted", models.BigIntegerField(default=0)),
            ],
            options={"db_table": "kv_maintenance_run"},
        ),
        migrations.RunPython(seed, migrations.RunPython.noop),
    ]
