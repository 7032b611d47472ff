"""``braintumor serve``: a web page and an HTTP API over a loaded model.

`create_app` builds the FastAPI application (``POST /v1/predict``, ``POST /v1/explain``,
``GET /v1/model``, ``GET /healthz``, the OpenAPI document at ``/openapi.json`` with ``/docs``,
and the page at ``/``); ``braintumor serve`` runs it with uvicorn. Needs the packages fastapi,
uvicorn and python-multipart.
"""

from braintumor.serve.app import create_app

__all__ = ["create_app"]
