"""The OpenAI-compatible server: ``slipstream serve VARIANT`` (see :mod:`slipstream.serving.app`).

Model-free parts (scheduler, caches, text streaming) import no web framework; the app, routes and
server import FastAPI and uvicorn (the ``serve`` extra).
"""
