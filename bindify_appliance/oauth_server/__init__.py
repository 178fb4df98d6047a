"""The appliance as an OAuth 2.1 authorization server for its own MCP endpoints (DESIGN §10).

Modules, one job each: `settings` (options), `clients` (registered clients and client ID
metadata documents), `codes` (one-time authorization codes in the KV), `tokens` (token
formats, hashes and the sealed opener), `grants` (grants, refresh rotation, revocation),
`metadata`, `register`, `token_endpoint` and `revoke` (the HTTP endpoints), `bearer` (the
proxy's `bndat_` admission) and `routes`.

Invariants: tokens and codes are stored only as hashes; what opens a zero-knowledge connection
is stored only sealed under a key derived from a token or code, so the database, the KV and the
master keys together open nothing without one.
"""
