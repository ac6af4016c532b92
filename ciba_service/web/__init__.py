"""The HTTP layer (FastAPI): ``app.create_app`` mounts the routes by audience (``oauth`` for
agents and resource servers, ``approval`` for the user's device, ``keycloak`` for Keycloak's
authentication channel) over a :class:`~ciba_service.server.Provider`; ``serving`` runs an app
on a background thread (demo, tests)."""
