"""The service plus one slow route, served by Hypercorn in tests/test_shutdown.py."""

from __future__ import annotations

from quart import request
from sqlalchemy import text

from service.app import create_app
from service.db import current_session

app = create_app()


@app.get("/slow")
async def slow() -> dict[str, float]:
    """Hold the request's database connection for ``?seconds=`` (default 1) with pg_sleep."""
    seconds = float(request.args.get("seconds", "1"))
    await current_session().execute(text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})
    return {"slept": seconds}
