"""docs/architecture.md's "Adding a resource" walkthrough is true of the code.

The walkthrough adds notes; countries are the resource it copies. Every file it names exists
(with "notes" read as "countries"), every name it uses is defined where it says, and every
resource's read path has the parts it describes.
"""

from __future__ import annotations

import importlib
import re

import pytest

from service.app import BLUEPRINTS
from service.cli import db_group
from service.schemas.common import CursorList, ListQuery, NumberedList, PublicSchema, Schema
from tests.databases import REPO_ROOT

WALKTHROUGH = (
    (REPO_ROOT / "docs" / "architecture.md")
    .read_text()
    .split("## Adding a resource: a worked example", 1)[1]
)
# The walkthrough's resource, and the one the code has in its place.
AS_COUNTRIES = (("notes", "countries"), ("Note", "Country"), ("note", "country"))
# module: names the walkthrough uses from it, as written (with "note" for the new resource).
NAMED: dict[str, tuple[str, ...]] = {
    "service.models": ("Timestamped", "Base"),
    "service.schemas.common": (
        "Schema",
        "PublicSchema",
        "CursorList",
        "NumberedList",
        "ListQuery",
    ),
    "service.schemas.notes": ("NoteCreate", "NotePublic", "NoteList", "NoteQuery"),
    "service.queries.notes": (
        "notes",
        "ORDERS",
        "_PUBLIC",
        "list_statement",
        "read_note",
        "get_note",
        "create_note",
    ),
    "service.queries.rows": ("read_one",),
    "service.pagination": ("sort_keys", "Listing"),
    "service.listing": ("paginate",),
    "service.db": ("current_session",),
    "service.errors": ("APIError", "not_found", "conflict"),
    "service.transactions": ("retried",),
    "service.constraints": ("refused_by",),
    "service.app": ("BLUEPRINTS",),
    "quart_schema": ("validate_querystring", "validate_request", "document_response"),
    "tests.conftest": ("client",),
}
RESOURCES = (("countries", "country"), ("sources", "source"), ("records", "record"))


def _as_countries(text: str) -> str:
    for new, existing in AS_COUNTRIES:
        text = text.replace(new, existing)
    return text


def test_every_file_the_walkthrough_names_exists() -> None:
    paths = set(re.findall(r"`((?:service|tests|docs)/[\w/]+\.\w+)", WALKTHROUGH))
    assert "service/queries/notes.py" in paths
    missing = [path for path in sorted(paths) if not (REPO_ROOT / _as_countries(path)).exists()]
    assert missing == [], f"the walkthrough names files that do not exist: {missing}"


@pytest.mark.parametrize("module", sorted(NAMED))
def test_every_name_the_walkthrough_uses_is_defined(module: str) -> None:
    found = importlib.import_module(_as_countries(module))
    for name in NAMED[module]:
        assert re.search(rf"\b{re.escape(name)}\b", WALKTHROUGH), (
            f"the walkthrough no longer says {name}"
        )
        assert hasattr(found, _as_countries(name)), f"{_as_countries(module)} has no {name}"


def test_the_walkthrough_schemas_have_the_bases_it_gives() -> None:
    from service.schemas import countries

    assert issubclass(countries.CountryCreate, Schema)
    assert issubclass(countries.CountryPublic, PublicSchema)
    assert issubclass(countries.CountryQuery, ListQuery)
    assert "order" in countries.CountryQuery.model_fields
    listed = countries.CountryList.model_fields["root"].annotation
    assert listed == CursorList[countries.CountryPublic] | NumberedList[countries.CountryPublic]


def test_the_walkthrough_commands_exist() -> None:
    for command in re.findall(r"quart --app service\.app db (\w+)", WALKTHROUGH):
        assert command in db_group.commands, f"no 'db {command}' command"


@pytest.mark.parametrize(("plural", "singular"), RESOURCES)
def test_every_resource_reads_and_routes_as_the_walkthrough_says(
    plural: str, singular: str
) -> None:
    queries = importlib.import_module(f"service.queries.{plural}")
    for name in ("ORDERS", "list_statement", f"read_{singular}", f"get_{singular}"):
        assert hasattr(queries, name), f"service/queries/{plural}.py has no {name}"
    routes = importlib.import_module(f"service.routes.{plural}")
    assert routes.blueprint in BLUEPRINTS
    assert (REPO_ROOT / "tests" / "routes" / f"test_{plural}.py").exists()
