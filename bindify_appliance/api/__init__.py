"""The JSON admin API (`/api/v1`, DESIGN §5) and its OpenAPI 3.1 document.

`api.base` holds the handler base and the `@operation` declaration every verb carries;
`api.routes.api_routes(ctx, services)` lists the routes for the composition root.
"""
