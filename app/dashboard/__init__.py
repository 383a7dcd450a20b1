"""The dashboard at `/dashboard`: server-rendered pages over the services, and one small script.

A person signs in with an API key; the pages read the tenant's data through the same services as
the API (never through HTTP), and the live feed listens to `GET /api/events/stream` with a
short-lived token the page obtains with its signed-in cookie. See `views` for the pages and
`session` for how signing in works.
"""
