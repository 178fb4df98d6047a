"""0002 single sign-on identities: which OpenID Connect identity belongs to which user.

An identity is keyed by (issuer, subject) — the only pair OpenID Connect guarantees stable and
unique — never by e-mail. Deleting a user deletes their identities.

Frozen: the model below is a copy made for this migration; it never imports the app's models.
"""

from __future__ import annotations

import peewee as pw


def up(db: pw.Database) -> None:
    class Base(pw.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class User(Base):
        id = pw.TextField(primary_key=True)

        class Meta:
            table_name = "users"

    class OidcIdentity(Base):
        id = pw.TextField(primary_key=True)
        user = pw.ForeignKeyField(User, column_name="user_id", on_delete="CASCADE")
        issuer = pw.TextField()
        subject = pw.TextField()
        email = pw.TextField(null=True)
        created_at = pw.TextField()
        last_login_at = pw.TextField(null=True)

        class Meta:
            table_name = "oidc_identities"
            indexes = ((("issuer", "subject"), True),)

    db.create_tables([OidcIdentity], safe=False)
