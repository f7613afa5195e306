"""Peer: Flask + Flask-SQLAlchemy (sync, psycopg 3), served by gunicorn's gthread worker.

The origin of the port, written the way a Flask app usually is: ``db.session`` (one session
per app context, removed at teardown) and ``jsonify``. Only the benchmark's three endpoints::

    gunicorn -k gthread --threads 10 -w 1 bench.peers.flask_app:app
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.exc import IntegrityError

from bench.peers import tables
from bench.peers.common import (
    POOL_SIZE,
    POOL_TIMEOUT,
    RequestError,
    authorized,
    make_cursor,
    parse_create,
    parse_cursor,
    parse_limit,
    problem,
    public,
    url_with_driver,
    utc_now,
)

app = Flask(__name__)
app.config["SQLALCHEMY_DATABASE_URI"] = url_with_driver("psycopg")
app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
    "pool_size": POOL_SIZE,
    "max_overflow": 0,
    "pool_timeout": POOL_TIMEOUT,
}
app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the service's key order
db = SQLAlchemy(app)


@app.errorhandler(RequestError)
def bad_request(error: RequestError) -> ResponseReturnValue:
    response = jsonify(problem(error.status, error.detail))
    response.content_type = "application/problem+json"
    return response, error.status


@app.get("/records/<int:record_id>")
def get_record(record_id: int) -> ResponseReturnValue:
    row = db.session.execute(tables.RECORD_BY_ID, {"record_id": record_id}).mappings().first()
    if row is None:
        raise RequestError(404, f"record {record_id} does not exist")
    return jsonify(public(row))


@app.get("/records")
def list_records() -> ResponseReturnValue:
    name = request.args.get("country")
    if name is None:
        raise RequestError(422, "this peer lists one country's records: give country=NAME")
    limit = parse_limit(request.args.get("limit"))
    params: dict[str, Any] = {"name": name, "limit": limit + 1}
    statement = tables.RECORDS_BY_COUNTRY
    if cursor := request.args.get("cursor"):
        params["after_date"], params["after_id"] = parse_cursor(cursor)
        statement = tables.RECORDS_BY_COUNTRY_AFTER
    rows = db.session.execute(statement, params).mappings().all()
    next_cursor = make_cursor(rows[limit - 1]) if len(rows) > limit else None
    return jsonify(items=[public(row) for row in rows[:limit]], next_cursor=next_cursor)


@app.post("/records")
def create_record() -> ResponseReturnValue:
    if not authorized(request.headers.get("Authorization")):
        raise RequestError(401, "writes need 'Authorization: Bearer <token>' with a valid token")
    fields = parse_create(request.get_json(silent=True))
    fields["now"] = utc_now()
    session = db.session
    country_id = session.scalar(tables.COUNTRY_ID, fields)
    if country_id is None:
        country_id = session.scalar(tables.INSERT_COUNTRY, fields) or session.scalar(
            tables.COUNTRY_ID, fields
        )
    try:
        row = session.execute(tables.INSERT_RECORD, {**fields, "country_id": country_id})
        created = dict(row.mappings().one())
        session.commit()
    except IntegrityError:
        session.rollback()
        detail = f"{fields['name']} already has a record for {fields['date']}"
        raise RequestError(409, detail) from None
    body = public({**created, "country": fields["name"], "source_ids": []})
    return jsonify(body), 201, {"Location": f"/records/{created['id']}"}
