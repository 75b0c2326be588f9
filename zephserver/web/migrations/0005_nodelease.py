from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('zephweb', '0004_token_parent'),
    ]

    operations = [
        migrations.CreateModel(
            name='NodeLease',
            fields=[
                ('node', models.CharField(max_length=255, primary_key=True, serialize=False)),
                ('renewed', models.DateTimeField()),
                ('lost_at', models.DateTimeField(blank=True, null=True)),
            ],
        ),
    ]
