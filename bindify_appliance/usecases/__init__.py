"""One operation per use case, shared by the web UI, the admin API and the CLI.

Each takes the acting principal (`Acting`: who, with which role, from which address) and does
the store write, the proxy cache invalidation and the audit entry together, so no caller can
do one without the others. Ownership checks live here too (`owned_connection`).
"""
