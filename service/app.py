"""The app factory: ``create_app`` builds everything; ``app`` is the served instance."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from quart import Quart

from service.db import Database
from service.errors import register_error_handlers
from service.routes import health
from service.settings import ConfigError, Settings, load_settings


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Quart:
    """Build the app from ``config`` (a Settings, or overrides of the environment)."""
    settings = config if isinstance(config, Settings) else load_settings(config)
    logging.basicConfig(level=settings.LOG_LEVEL)

    app = Quart(__name__)
    app.config["SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = settings.MAX_BODY_BYTES

    # Extensions
    Database(settings).init_app(app)

    # Errors and blueprints
    register_error_handlers(app)
    app.register_blueprint(health.blueprint)
    return app


def _create_served_app() -> Quart:
    try:
        return create_app()
    except ConfigError as error:
        # One line naming the variable, not a traceback, stops the server or the CLI.
        raise SystemExit(f"configuration error: {error}") from None


app = _create_served_app()
