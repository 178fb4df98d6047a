"""The appliance as an OAuth 2.1 authorization server for its own MCP endpoints (DESIGN §10).

Modules, one job each: `settings` (options), `clients` (clients as the authorize and token
steps see them), `documents` (client ID metadata documents), `redirects` (redirect-URI rules),
`client_auth` (client authentication), `pkce`, `codes` (one-time authorization codes in the
KV), `tokens` (token formats, hashes and the sealed opener), `grants` (grants, refresh
rotation, revocation), `http`, `metadata`, `register`, `token_endpoint` and `revoke` (the HTTP
endpoints), `bearer` and `proxying` (the proxy's `bndat_` admission), `housekeeping` (the
`oauth-cleanup` job) and `routes`. The authorize page (sign-in and consent) is the UI's; it
calls `clients.find_client`, `clients.redirect_uri_allowed` and `codes.issue_code`.

Invariants: tokens and codes are stored only as hashes; what opens a zero-knowledge connection
is stored only sealed under a key derived from a token or code, so the database, the KV and the
master keys together open nothing without one.
"""
