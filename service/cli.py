"""The app's CLI commands: ``db`` (Alembic, as Flask-Migrate), ``load-data``, ``generate-data``.

Every command works on the app's ``DATABASE_URL`` (``app.config["SETTINGS"]``)::

    quart --app service.app db upgrade                 # or downgrade, migrate -m, check, ...
    quart --app service.app load-data FILE.csv --on-conflict skip
    quart --app service.app generate-data --countries 1000 --days 1000 --output big.csv
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from quart import Quart
from quart.cli import ScriptInfo
from sqlalchemy.exc import SQLAlchemyError

from service.db import get_database
from service.generate import DEFAULT_SEED, DEFAULT_START, generate_rows, write_csv, write_database
from service.load import (
    EXIT_INTERRUPTED,
    ConsoleProgress,
    LoadReport,
    batch_size_option,
    first_line,
    interrupted_message,
    load_arguments,
    on_conflict_option,
    run_load,
)
from service.queries.bulk import ConflictMode
from service.settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.operations.ops import MigrationScript
    from alembic.runtime.migration import MigrationContext

REPO_ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = REPO_ROOT / "alembic.ini"


def _current_app() -> Quart:
    """The app the ``quart`` command loaded (``--app``); the commands run outside its context."""
    return click.get_current_context().ensure_object(ScriptInfo).load_app()


def _settings() -> Settings:
    settings = _current_app().config["SETTINGS"]
    assert isinstance(settings, Settings)
    return settings


# -- db: Alembic --------------------------------------------------------------------------------


def alembic_config(database_url: str, directory: str | Path | None = None) -> Config:
    """The repo's alembic.ini, pointed at ``database_url`` (and at another script directory)."""
    from alembic.config import Config

    if not ALEMBIC_INI.is_file():
        raise click.ClickException(f"{ALEMBIC_INI} not found; run from a checkout of the service")
    config = Config(str(ALEMBIC_INI))
    # The ini parser interpolates '%': a password holding one must not be taken for a reference.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    if directory is not None:
        config.set_main_option("script_location", str(directory).replace("%", "%%"))
    return config


def _run_alembic(directory: str | None, action: Callable[[Config], Any]) -> Any:
    """Run an Alembic command on the app's database; its failures become one-line errors."""
    from alembic.util import CommandError

    config = alembic_config(_settings().DATABASE_URL, directory)
    try:
        return action(config)
    except CommandError as error:
        raise click.ClickException(str(error)) from None
    except (SQLAlchemyError, OSError) as error:
        raise click.ClickException(f"database error: {first_line(error)}") from None


def _directory_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "-d",
        "--directory",
        default=None,
        type=click.Path(file_okay=False),
        help="Migration script directory (default: script_location of alembic.ini).",
    )(command)


def _sql_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--sql", is_flag=True, help="Print the SQL instead of running it (offline mode)."
    )(command)


def _verbose_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-v", "--verbose", is_flag=True, help="Show more detail.")(command)


@click.group("db")
def db_group() -> None:
    """Database migrations (Alembic) on the app's DATABASE_URL."""


@db_group.command()
@_directory_option
@_sql_option
@click.argument("revision", default="head")
def upgrade(directory: str | None, sql: bool, revision: str) -> None:
    """Upgrade to REVISION (default: head)."""
    from alembic import command

    _run_alembic(directory, lambda config: command.upgrade(config, revision, sql=sql))


@db_group.command()
@_directory_option
@_sql_option
@click.argument("revision", default="-1")
def downgrade(directory: str | None, sql: bool, revision: str) -> None:
    """Downgrade to REVISION (default: -1, one step; 'base' undoes every migration)."""
    from alembic import command

    _run_alembic(directory, lambda config: command.downgrade(config, revision, sql=sql))


def _write_revision(
    directory: str | None, message: str | None, autogenerate: bool, rev_id: str | None
) -> None:
    from alembic import command

    refused: list[bool] = []

    def refuse_empty(
        _context: MigrationContext,
        _revision: str | Iterable[str | None] | Iterable[str],
        directives: list[MigrationScript],
    ) -> None:
        if all(ops.is_empty() for script in directives for ops in script.upgrade_ops_list):
            directives[:] = []
            refused.append(True)

    _run_alembic(
        directory,
        lambda config: command.revision(
            config,
            message,
            autogenerate=autogenerate,
            rev_id=rev_id,
            process_revision_directives=refuse_empty if autogenerate else None,
        ),
    )
    if refused:
        raise click.ClickException(
            "no changes detected between the models and the database; "
            "no revision was written (use 'db revision' for a hand-written one)"
        )


@db_group.command()
@_directory_option
@click.option("-m", "--message", default=None, help="The revision's message.")
@click.option("--rev-id", default=None, help="The revision id (default: a generated one).")
def migrate(directory: str | None, message: str | None, rev_id: str | None) -> None:
    """Autogenerate a revision from the models; refuses to write an empty one."""
    _write_revision(directory, message, True, rev_id)


@db_group.command()
@_directory_option
@click.option("-m", "--message", default=None, help="The revision's message.")
@click.option("--autogenerate", is_flag=True, help="Fill it in from the models (as migrate).")
@click.option("--rev-id", default=None, help="The revision id (default: a generated one).")
def revision(
    directory: str | None, message: str | None, autogenerate: bool, rev_id: str | None
) -> None:
    """Create a new, empty revision file to write by hand."""
    _write_revision(directory, message, autogenerate, rev_id)


@db_group.command()
@_directory_option
@click.option("-r", "--rev-range", default=None, help="A range, e.g. base:head or -2:current.")
@_verbose_option
@click.option("-i", "--indicate-current", is_flag=True, help="Mark the current revision.")
def history(
    directory: str | None, rev_range: str | None, verbose: bool, indicate_current: bool
) -> None:
    """List the revisions in order."""
    from alembic import command

    _run_alembic(
        directory,
        lambda config: command.history(
            config, rev_range, verbose=verbose, indicate_current=indicate_current
        ),
    )


@db_group.command()
@_directory_option
@_verbose_option
def current(directory: str | None, verbose: bool) -> None:
    """Show the database's current revision."""
    from alembic import command

    _run_alembic(directory, lambda config: command.current(config, verbose=verbose))


@db_group.command()
@_directory_option
@_verbose_option
def heads(directory: str | None, verbose: bool) -> None:
    """Show the head revision(s) of the scripts."""
    from alembic import command

    _run_alembic(directory, lambda config: command.heads(config, verbose=verbose))


@db_group.command()
@_directory_option
def check(directory: str | None) -> None:
    """Exit non-zero if the database is behind or the models changed without a revision."""
    from alembic import command

    _run_alembic(directory, command.check)


@db_group.command()
@_directory_option
@_sql_option
@click.argument("revision")
def stamp(directory: str | None, sql: bool, revision: str) -> None:
    """Record REVISION as current without running any migration."""
    from alembic import command

    _run_alembic(directory, lambda config: command.stamp(config, revision, sql=sql))


# -- data ---------------------------------------------------------------------------------------


@click.command("load-data")
@load_arguments
def load_data(file: Path, mode: ConflictMode, batch_size: int) -> None:
    """Load FILE (CSV: date,country,cases,deaths,recoveries) into the app's database.

    With --on-conflict error (the default) a file with any bad line or conflicting key writes
    nothing; skip and update load the rest, one committed batch at a time.
    """
    database = get_database(_current_app())
    click.get_current_context().exit(run_load(database, file, mode, batch_size))


@click.command("generate-data")
@click.option("--countries", type=click.IntRange(1, 1_000_000), required=True)
@click.option("--days", type=click.IntRange(1, 36_500), required=True)
@click.option("--seed", type=int, default=DEFAULT_SEED, show_default=True)
@click.option(
    "--start",
    type=click.DateTime(["%Y-%m-%d"]),
    default=DEFAULT_START.isoformat(),
    show_default=True,
    help="The first report date.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Write a CSV for load-data here instead of writing to the database.",
)
@on_conflict_option("skip", ("skip", "update"))
@batch_size_option()
def generate_data(
    countries: int,
    days: int,
    seed: int,
    start: dt.datetime,
    output: Path | None,
    mode: ConflictMode,
    batch_size: int,
) -> None:
    """Generate COUNTRIES x DAYS synthetic daily reports (the same for the same seed)."""
    rows = generate_rows(countries, days, seed=seed, start=start.date())
    if output is not None:
        written = write_csv(rows, output)
        click.echo(f"wrote {written:,} rows to {output}")
        return
    database = get_database(_current_app())
    report = LoadReport(Path("<generated>"), mode, batch_size)
    progress = ConsoleProgress("generate-data")

    async def write() -> None:
        async with database:
            await write_database(
                database, rows, countries * days, mode, batch_size, report, progress
            )

    try:
        asyncio.run(write())
    except KeyboardInterrupt:
        progress.close()
        click.echo(interrupted_message(report), err=True)
        click.get_current_context().exit(EXIT_INTERRUPTED)
    except (SQLAlchemyError, OSError) as error:
        progress.close()
        raise click.ClickException(
            f"database error: {first_line(error)} ({report.committed_rows:,} rows committed)"
        ) from None
    progress.close()
    click.echo(report.summary())


def init_app(app: Quart) -> None:
    """Add ``db``, ``load-data`` and ``generate-data`` to the app's ``quart`` command."""
    app.cli.add_command(db_group)
    app.cli.add_command(load_data)
    app.cli.add_command(generate_data)
