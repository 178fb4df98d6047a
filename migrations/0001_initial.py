"""0001 initial schema: every table of the first release, with its indexes.

Frozen: the models below are copies made for this migration and must never change, whatever
later happens to `bindify_appliance.store.models` (which this file does not import). Timestamps
are TEXT (`YYYY-MM-DDTHH:MM:SSZ`), ids TEXT unless noted. Columns with a default carry it in
the schema too (not only in Python), so raw inserts behave like model inserts. peewee renders
the DDL for the engine at hand (SQLite or PostgreSQL); the runner wraps `up` in one transaction.
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
        email = pw.TextField(unique=True)
        password_hash = pw.TextField(null=True)
        role = pw.TextField()
        disabled_at = pw.TextField(null=True)
        failed_logins = pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])
        locked_until = pw.TextField(null=True)
        created_at = pw.TextField()
        updated_at = pw.TextField()

        class Meta:
            table_name = "users"

    class SetupToken(Base):
        token_hash = pw.TextField(primary_key=True)
        expires_at = pw.TextField()
        used_at = pw.TextField(null=True)
        created_at = pw.TextField()

        class Meta:
            table_name = "setup_tokens"

    class SetupState(Base):
        id = pw.IntegerField(primary_key=True)
        completed_at = pw.TextField()
        admin = pw.ForeignKeyField(User, column_name="admin_id", null=True, on_delete="SET NULL")

        class Meta:
            table_name = "setup_state"

    class Session(Base):
        id = pw.TextField(primary_key=True)
        user = pw.ForeignKeyField(User, column_name="user_id", on_delete="CASCADE")
        created_at = pw.TextField()
        expires_at = pw.TextField(index=True)
        last_seen_at = pw.TextField()
        ip = pw.TextField(null=True)
        user_agent = pw.TextField(null=True)

        class Meta:
            table_name = "sessions"

    class PersonalToken(Base):
        id = pw.TextField(primary_key=True)
        user = pw.ForeignKeyField(User, column_name="user_id", on_delete="CASCADE")
        name = pw.TextField()
        token_hash = pw.TextField(unique=True)
        created_at = pw.TextField()
        last_used_at = pw.TextField(null=True)
        revoked_at = pw.TextField(null=True)

        class Meta:
            table_name = "personal_tokens"

    class Invite(Base):
        id = pw.TextField(primary_key=True)
        email = pw.TextField()
        role = pw.TextField()
        token_hash = pw.TextField(unique=True)
        created_by = pw.ForeignKeyField(
            User, column_name="created_by", null=True, on_delete="SET NULL"
        )
        created_at = pw.TextField()
        expires_at = pw.TextField()
        used_at = pw.TextField(null=True)

        class Meta:
            table_name = "invites"

    class Service(Base):
        id = pw.TextField(primary_key=True)
        name = pw.TextField(null=True)
        mcp_url = pw.TextField(null=True)
        transport = pw.TextField(
            default="streamable-http", constraints=[pw.SQL("DEFAULT 'streamable-http'")]
        )
        auth_json = pw.TextField(null=True)
        oauth_client_id = pw.TextField(null=True)
        oauth_client_secret_sealed = pw.TextField(null=True)
        oauth_key_fingerprint = pw.TextField(default="", constraints=[pw.SQL("DEFAULT ''")])
        builtin = pw.BooleanField(default=False, constraints=[pw.SQL("DEFAULT FALSE")])
        created_at = pw.TextField()
        updated_at = pw.TextField()

        class Meta:
            table_name = "services"

    class Connection(Base):
        id = pw.TextField(primary_key=True)
        user = pw.ForeignKeyField(User, column_name="user_id", on_delete="CASCADE")
        service = pw.TextField(index=True)
        label = pw.TextField(null=True)
        status = pw.TextField(default="active", constraints=[pw.SQL("DEFAULT 'active'")])
        auth_type = pw.TextField()
        auth_mode = pw.TextField(null=True)
        application = pw.TextField(null=True)
        key_storage_mode = pw.TextField()
        secret1_hash = pw.TextField(unique=True)
        secret2_verifier = pw.TextField(null=True)
        encrypted_tokens = pw.TextField(null=True)
        key_fingerprint = pw.TextField(default="", index=True, constraints=[pw.SQL("DEFAULT ''")])
        token_generation = pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])
        token_expires_at = pw.TextField(null=True)
        refresh_started_at = pw.TextField(null=True)
        needs_reconnect_at = pw.TextField(null=True)
        needs_reconnect_reason = pw.TextField(null=True)
        disabled_at = pw.TextField(null=True)
        created_at = pw.TextField()
        updated_at = pw.TextField()
        last_used_at = pw.TextField(null=True)
        last_refreshed_at = pw.TextField(null=True)

        class Meta:
            table_name = "connections"

    class ConnectionEvent(Base):
        id = pw.AutoField()
        connection = pw.ForeignKeyField(
            Connection, column_name="connection_id", null=True, on_delete="CASCADE", index=False
        )
        user_id = pw.TextField(null=True)
        event_type = pw.TextField()
        category = pw.TextField()
        detail = pw.TextField(null=True)
        upstream_status = pw.IntegerField(null=True)
        created_at = pw.TextField()

        class Meta:
            table_name = "connection_events"
            indexes = (
                (("connection", "created_at"), False),
                (("connection", "event_type", "category", "created_at"), False),
            )

    class DcrRegistration(Base):
        id = pw.TextField(primary_key=True)
        service = pw.TextField()
        issuer = pw.TextField()
        registration_sealed = pw.TextField()
        key_fingerprint = pw.TextField()
        client_id_expires_at = pw.TextField(null=True)
        created_at = pw.TextField()
        updated_at = pw.TextField()

        class Meta:
            table_name = "dcr_registrations"
            indexes = ((("service", "issuer"), True),)

    class Setting(Base):
        key = pw.TextField(primary_key=True)
        value = pw.TextField()
        updated_at = pw.TextField()

        class Meta:
            table_name = "settings"

    class Instance(Base):
        id = pw.TextField(primary_key=True)
        hostname = pw.TextField()
        pid = pw.IntegerField()
        version = pw.TextField()
        started_at = pw.TextField()
        heartbeat_at = pw.TextField()
        key_fingerprints = pw.TextField(default="[]", constraints=[pw.SQL("DEFAULT '[]'")])

        class Meta:
            table_name = "instances"

    class JobRun(Base):
        name = pw.TextField(primary_key=True)
        last_started_at = pw.TextField()
        last_finished_at = pw.TextField(null=True)
        duration_ms = pw.IntegerField(null=True)
        outcome = pw.TextField()
        detail = pw.TextField(null=True)

        class Meta:
            table_name = "job_runs"

    # safe=False: a table that already exists means the database is not what the runner thinks;
    # fail (and roll back) rather than carry on over it.
    db.create_tables(
        [
            User,
            SetupToken,
            SetupState,
            Session,
            PersonalToken,
            Invite,
            Service,
            Connection,
            ConnectionEvent,
            DcrRegistration,
            Setting,
            Instance,
            JobRun,
        ],
        safe=False,
    )
