"""The service plus two slow routes, served by Hypercorn in tests/test_shutdown.py."""

from __future__ import annotations

from quart import request
from sqlalchemy import text

from service.app import create_app
from service.db import current_session
from tests.gate import StatementGate

app = create_app()


@app.get("/slow")
async def slow() -> dict[str, float]:
    """Hold the request's database connection for ``?seconds=`` (default 1) with pg_sleep."""
    seconds = float(request.args.get("seconds", "1"))
    await current_session().execute(text("SELECT pg_sleep(:seconds)"), {"seconds": seconds})
    return {"slept": seconds}


@app.get("/blocked")
async def blocked() -> dict[str, int]:
    """Hold the request's database connection until the test releases advisory lock ``?key=``
    (tests/gate.py)."""
    key = int(request.args["key"])
    await current_session().execute(StatementGate.postgresql_statement(), {"key": key})
    return {"released": key}
