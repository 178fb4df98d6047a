"""The HTTP layer every route shares, with no HTML in it (`base`), and the session cookie with
its CSRF binding for the routes a browser session authenticates (`cookies`)."""
