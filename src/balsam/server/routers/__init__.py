"""Thin routers: each route authorizes (see :mod:`balsam.server.deps`) and makes one Backend
call; the Backend (a LocalBackend) runs the same services as a local caller would."""
