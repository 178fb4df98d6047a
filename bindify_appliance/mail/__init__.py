"""Optional e-mail: invites, needs-reconnect notices and failing-job notices (DESIGN §15).

- `transport.py` — `BINDIFY_SMTP_URL` and one blocking send (TLS rules);
- `messages.py` — the texts, and `EmailMessage` building;
- `outbox.py` — sealing and queueing, and the `mail-outbox` job that sends.
The outbox table's units of work live in `store/outbox.py`.
"""
