"""The edge service: workflow databases over HTTP, with users, tokens and roles (docs/server.md).

Needs the ``server`` extra (FastAPI, uvicorn); clients use :mod:`balsam.backends.remote`,
which needs only httpx.
"""
