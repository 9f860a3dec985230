"""Integrations with frameworks, each an optional extra built on the public API.

- :mod:`runtree.integrations.asgi` (extra ``asgi``): one boundary per HTTP request or
  websocket connection, for any ASGI app (Starlette, FastAPI, ...).
- :mod:`runtree.integrations.fastapi` (extra ``fastapi``): ``Ctx``, ``Resolve`` and a
  lifespan helper for FastAPI apps.

``import runtree`` imports none of them.
"""
