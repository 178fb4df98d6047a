"""0009 optional billing (DESIGN §11): a member's Stripe state, the webhook log, suspensions.

- `billing_accounts(user_id …)`: one row per member billing has seen (the trial starts then):
  Stripe customer and subscription, the subscription's status, quantity, period end, cancel
  date, past-due start, and `state_at` (the Stripe time of the state stored, so an older event
  never rolls it back).
- `billing_events(id, type, created_at, received_at, outcome)`: each Stripe event id once (the
  primary key is the exactly-once guard across instances); pruned after 90 days. No payload.
- `users.billing_until`: until when the member is entitled (NULL: not billed — an admin, or a
  member billing has not seen). Read by the proxy with the row it already fetches.
- `connections.billing_suspended_at`: set while billing keeps the connection suspended.

Every existing row gets NULLs: turning billing on suspends nobody.

Frozen: the models below are copies made for this migration; they never import the app's models.
"""

from __future__ import annotations

import peewee as pw


def up(db: pw.Database) -> None:
    class User(pw.Model):
        id = pw.TextField(primary_key=True)

        class Meta:
            database = db
            table_name = "users"

    class BillingAccount(pw.Model):
        user = pw.ForeignKeyField(
            User, column_name="user_id", primary_key=True, on_delete="CASCADE"
        )
        customer_id = pw.TextField(null=True, unique=True)
        subscription_id = pw.TextField(null=True)
        subscription_status = pw.TextField(null=True)
        quantity = pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])
        current_period_end = pw.TextField(null=True)
        cancel_at = pw.TextField(null=True)
        past_due_since = pw.TextField(null=True)
        subscribed_at = pw.TextField(null=True)
        trial_ends_at = pw.TextField()
        state_at = pw.TextField(null=True)
        created_at = pw.TextField()
        updated_at = pw.TextField()

        class Meta:
            database = db
            table_name = "billing_accounts"

    class BillingEvent(pw.Model):
        id = pw.TextField(primary_key=True)
        type = pw.TextField()
        created_at = pw.TextField()
        received_at = pw.TextField(index=True)
        outcome = pw.TextField()

        class Meta:
            database = db
            table_name = "billing_events"

    db.create_tables([BillingAccount, BillingEvent], safe=False)
    db.execute_sql("ALTER TABLE users ADD COLUMN billing_until TEXT")
    db.execute_sql("ALTER TABLE connections ADD COLUMN billing_suspended_at TEXT")
