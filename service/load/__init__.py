"""Load a CSV of daily reports (``date,country,cases,deaths,recoveries``) through the bulk path.

- ``error`` (the default): the whole file is checked first (bad rows, keys repeated in the
  file), then written in one transaction, committed only if no row meets a stored key (the
  database's unique constraint says so, also of keys stored meanwhile); any problem writes
  nothing.
- ``skip`` / ``update``: valid rows are written in batches through
  :func:`service.queries.bulk.bulk_write`, each batch committed on its own, so an interruption
  loses at most the batch in flight; bad rows are rejected and listed.

Run it as ``python -m service.load FILE.csv`` or ``quart --app service.app load-data FILE.csv``.
The modules by job: ``source`` reads and validates the file, ``checking`` and ``writing`` are
the two passes, ``loading`` runs them, ``report`` says what happened, ``console`` is the
command line. What other code uses is imported from here.
"""

from service.load.console import (
    EXIT_INTERRUPTED,
    ConsoleProgress,
    batch_size_option,
    first_line,
    interrupted_message,
    load_arguments,
    main,
    on_conflict_option,
    run_load,
)
from service.load.loading import load_csv
from service.load.report import (
    DEFAULT_BATCH_SIZE,
    MAX_LISTED_PROBLEMS,
    MODES,
    LoadReport,
    Problem,
    Progress,
    ProgressCallback,
)
from service.load.source import CsvSource, LoadError
from service.load.writing import write_rows

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "EXIT_INTERRUPTED",
    "MAX_LISTED_PROBLEMS",
    "MODES",
    "ConsoleProgress",
    "CsvSource",
    "LoadError",
    "LoadReport",
    "Problem",
    "Progress",
    "ProgressCallback",
    "batch_size_option",
    "first_line",
    "interrupted_message",
    "load_arguments",
    "load_csv",
    "main",
    "on_conflict_option",
    "run_load",
    "write_rows",
]
