"""The REST API: conversations, personas and replicas in the hosted contract (see ``api.app``)."""

from api.app import create_app

__all__ = ["create_app"]
