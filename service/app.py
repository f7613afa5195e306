"""The app factory: ``create_app`` builds everything.

Servers run ``service.serve:app``; ``quart --app service.app`` finds ``create_app`` itself.
``hypercorn service.app:app``, the ASGI path the HTTP contract names, serves the same app as
``service.serve:app``: only a Hypercorn worker loading this module gets an ``app`` from it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import swagger_ui
from quart import Quart
from quart_schema import QuartSchema

from service import __version__, auth, cli, cors, http, jobs, logs, metrics
from service.asgi import ServiceApp
from service.compat.hypercorn import exit_serving, loading_in_hypercorn
from service.db import Database
from service.errors import register_error_handlers
from service.logs import configure_logging
from service.openapi import ServiceOpenAPIProvider
from service.routes import countries, health, meta, records, sources, stats
from service.settings import ConfigError, Settings, load_settings

BLUEPRINTS = (
    meta.blueprint,
    health.blueprint,
    countries.blueprint,
    records.blueprint,
    sources.blueprint,
    stats.blueprint,
)
SWAGGER_UI_ASSETS = str(Path(swagger_ui.__file__).parent / "static")

logger = logging.getLogger(__name__)


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Quart:
    """Build the app from ``config`` (a Settings, or overrides of the environment).

    Without ``config`` it reads the environment, as the entry points do (``service.serve``,
    ``quart --app service.app``): a bad value there ends the process with one line naming the
    variable, not a traceback.
    """
    settings = config if isinstance(config, Settings) else _settings(config)
    configure_logging(settings)
    _warn_about_development_secret(settings)

    # The API docs page is served with Swagger UI's own assets: no internet access needed.
    app = ServiceApp(__name__, static_folder=SWAGGER_UI_ASSETS, static_url_path="/docs/static")
    app.config["SETTINGS"] = settings
    app.config["QUART_SCHEMA_SWAGGER_JS_URL"] = "/docs/static/swagger-ui-bundle.js"
    app.config["QUART_SCHEMA_SWAGGER_CSS_URL"] = "/docs/static/swagger-ui.css"

    # Extensions, in the order their request hooks must run.
    metrics.init_app(app)
    QuartSchema(
        app,
        info={"title": "SARS records API", "version": __version__},
        openapi_path="/openapi.json",
        swagger_ui_path="/docs",
        redoc_ui_path=None,
        scalar_ui_path=None,
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        openapi_provider_class=ServiceOpenAPIProvider,
    )
    http.init_app(app, settings)
    logs.init_app(app)
    cors.init_app(app, settings)
    Database(settings).init_app(app)
    auth.init_app(app)
    jobs.init_app(app)
    cli.init_app(app)

    # Errors and blueprints
    register_error_handlers(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app


def _warn_about_development_secret(settings: Settings) -> None:
    # SQLite is the development database; anything else is presumed to be shared or served.
    if settings.signs_with_development_secret and not settings.is_sqlite:
        logger.warning(
            "CURSOR_SECRET is the development value published in the repository: anyone can "
            "forge pagination cursors; set CURSOR_SECRET to a long random string"
        )


def _settings(overrides: Mapping[str, Any] | None) -> Settings:
    if overrides is not None:
        return load_settings(overrides)
    try:
        return load_settings()
    except ConfigError as error:
        # One line naming the variable, not a traceback, and a non-zero status stop the
        # server or the CLI.
        exit_serving(f"configuration error: {error}")


# Hypercorn looks ``app`` up in the module's namespace (no module __getattr__), so the served
# app must be a module attribute; building it here for any other importer would tune that
# process's garbage collector (service.serve). When service.serve is what the worker loads,
# it is already importing and builds the app itself.
if loading_in_hypercorn() and "service.serve" not in sys.modules:
    from service.serve import app as app
