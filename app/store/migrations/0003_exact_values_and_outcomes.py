"""Values as JSON text, and Idempotency-Key records as outcomes instead of response bytes.

`kv_item.value` becomes text holding the JSON the API wrote: no backend's JSON type then changes
a number on the way (PostgreSQL's jsonb has no -0.0 and prints 1e300 as 301 digits). Existing
values keep the text their column gives them (`jsonb::text` on PostgreSQL).

An idempotency record now keeps what the write did (its outcome, the item, the first request's
id) and a replay is rendered from it by the same code as a fresh answer. Records written before
are converted from their stored responses; one that cannot be read is dropped, so its key counts
as new, as it would once expired.

On PostgreSQL the type change rewrites kv_item under an exclusive lock: on a large table, run
this migration in a quiet period. The rewrite is not bound by the connection's statement_timeout
(KV_DB_TIMEOUT, meant for requests); waiting for the lock still is.
"""

import json
from datetime import datetime

from django.db import migrations, models

import app.store.fields

_KEYED_PROBLEMS = {
    404: ("not_found", "no item with key "),
    409: ("key_exists", "an item with key "),
}


def _converted(record):
    """The record's fields as an outcome, or None when its response cannot be read."""
    body = json.loads(bytes(record.body)) if record.body else None
    if record.status in (200, 201):
        record.outcome = "created" if record.status == 201 else "updated"
        record.item_key = body["key"]
        record.version = body["version"]
        record.value = json.dumps(body["value"], ensure_ascii=False, separators=(",", ":"))
        record.item_created_at = datetime.fromisoformat(body["created_at"])
        record.item_updated_at = datetime.fromisoformat(body["updated_at"])
        record.request_id = "-"
        return record
    if record.status == 204:
        record.outcome, record.item_key, record.request_id = "deleted", "", "-"
        return record
    record.request_id = str(body["request_id"])
    if record.status == 412:
        record.outcome, record.item_key = "version_mismatch", ""
        record.version = int(record.headers["ETag"].strip('"'))
        return record
    code, prefix = _KEYED_PROBLEMS[record.status]
    detail = body["detail"]
    record.outcome = code
    record.item_key = detail[len(prefix) :].removesuffix(" exists already")
    return record


def lift_statement_timeout(apps, schema_editor):
    """For this migration's transaction only (PostgreSQL runs a migration in one)."""
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("SET LOCAL statement_timeout = 0")


def convert_records(apps, schema_editor):
    records = apps.get_model("kvstore", "IdempotencyRecord")
    fields = [
        "outcome",
        "item_key",
        "version",
        "value",
        "item_created_at",
        "item_updated_at",
        "request_id",
    ]
    done, unreadable = [], []
    for record in records.objects.all().iterator(chunk_size=1000):
        try:
            done.append(_converted(record))
        except (KeyError, TypeError, ValueError):
            unreadable.append(record.pk)
        if len(done) >= 1000:
            records.objects.bulk_update(done, fields)
            done.clear()
    records.objects.bulk_update(done, fields)
    records.objects.filter(pk__in=unreadable).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("kvstore", "0002_idempotency"),
    ]

    operations = [
        migrations.RunPython(lift_statement_timeout, migrations.RunPython.noop, elidable=True),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="outcome",
            field=models.CharField(default="", max_length=32),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="item_key",
            field=app.store.fields.BinaryCharField(default="", max_length=255),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="version",
            field=models.BigIntegerField(null=True),
        ),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="value",
            field=models.TextField(null=True),
        ),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="item_created_at",
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="item_updated_at",
            field=models.DateTimeField(null=True),
        ),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="request_id",
            field=models.CharField(default="-", max_length=128),
            preserve_default=False,
        ),
        migrations.RunPython(convert_records, migrations.RunPython.noop, elidable=True),
        migrations.RemoveField(model_name="idempotencyrecord", name="status"),
        migrations.RemoveField(model_name="idempotencyrecord", name="body"),
        migrations.RemoveField(model_name="idempotencyrecord", name="headers"),
        migrations.AlterField(
            model_name="item",
            name="value",
            field=models.TextField(),
        ),
    ]
