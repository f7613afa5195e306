"""The served process's entry point: ``hypercorn --config hypercorn.toml service.serve:app``.

Importing this module builds the app from the environment and tunes the process's garbage
collector for serving; it is the one module of the service meant to change the process that
imports it. Everything else (``service.app``'s ``create_app``, the CLI) leaves it alone.
"""

from __future__ import annotations

from quart import Quart

from service.app import create_app
from service.collector import tune_collector_for_serving


def create_served_app() -> Quart:
    """The app as a server runs it, from the environment, in a process tuned for serving."""
    served = create_app()
    tune_collector_for_serving()
    return served


app = create_served_app()
