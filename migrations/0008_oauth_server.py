"""0008 the OAuth authorization server for MCP clients (DESIGN §10).

- `oauth_clients`: registrations from `POST /oauth/register`, each under the issuer (base URL)
  it was made for; client secrets only as hashes; `fingerprint` (unique, public clients only)
  makes identical registrations one row; rows with no `used_at` expire after 24 h.
- `oauth_grants`: a client's access to one connection (cascades with the connection and user).
- `oauth_tokens`: access and refresh tokens by hash (cascade with their grant), each with what
  opens a zero-knowledge connection sealed under a key derived from the token.

Frozen: the models below are copies made for this migration; it never imports the app's models.
"""

from __future__ import annotations

import peewee as pw


def up(db: pw.Database) -> None:
    class Base(pw.Model):
        class Meta:
            database = db
            legacy_table_names = False

    # Stand-ins for the tables the foreign keys reference (not created here).
    class User(Base):
        id = pw.TextField(primary_key=True)

        class Meta:
            table_name = "users"

    class Connection(Base):
        id = pw.TextField(primary_key=True)

        class Meta:
            table_name = "connections"

    class OAuthClientRecord(Base):
        id = pw.TextField(primary_key=True)
        issuer = pw.TextField()
        client_name = pw.TextField()
        redirect_uris = pw.TextField()
        auth_method = pw.TextField()
        secret_hash = pw.TextField(null=True)
        fingerprint = pw.TextField(null=True, unique=True)
        created_at = pw.TextField(index=True)
        used_at = pw.TextField(null=True)

        class Meta:
            table_name = "oauth_clients"

    class OAuthGrant(Base):
        id = pw.TextField(primary_key=True)
        issuer = pw.TextField()
        client_id = pw.TextField()
        client_name = pw.TextField()
        connection = pw.ForeignKeyField(
            Connection, column_name="connection_id", on_delete="CASCADE"
        )
        user = pw.ForeignKeyField(User, column_name="user_id", on_delete="CASCADE")
        service = pw.TextField()
        resource = pw.TextField(null=True)
        created_at = pw.TextField()
        expires_at = pw.TextField()
        last_used_at = pw.TextField(null=True)

        class Meta:
            table_name = "oauth_grants"

    class OAuthToken(Base):
        token_hash = pw.TextField(primary_key=True)
        grant = pw.ForeignKeyField(OAuthGrant, column_name="grant_id", on_delete="CASCADE")
        kind = pw.TextField()
        opener_sealed = pw.TextField(null=True)
        expires_at = pw.TextField(index=True)
        used_at = pw.TextField(null=True)

        class Meta:
            table_name = "oauth_tokens"

    db.create_tables([OAuthClientRecord, OAuthGrant, OAuthToken], safe=False)
