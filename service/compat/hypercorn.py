"""Hypercorn workaround: a worker that cannot start makes the whole server exit non-zero.

Written against Hypercorn 0.18.0 (``SUPPORTED``: ``>=0.18,<0.19``).

Names relied on: ``hypercorn.utils.load_application`` (public, but not documented) and how
Hypercorn runs workers (``hypercorn/run.py``, ``hypercorn/asyncio/run.py``): each worker is a
``multiprocessing`` child of the main process and imports the app inside
``load_application``. A process is taken for a Hypercorn worker when it is a
``multiprocessing`` child and that function is on the stack of the import.

Why: when its only worker exits non-zero, Hypercorn's main process still exits 0. ``run()``
records the worker's status, then joins the (now empty) list of workers again and keeps that
second result (pgjones/hypercorn#269; a fix is proposed in pgjones/hypercorn#372). A
supervisor then sees a clean exit from a server that never started, and may neither restart
it nor alert. So a worker that stops on a bad setting ends the main process too, with
SIGUSR1: Hypercorn installs no handler for it, and its default action terminates the process
(status 138 in a shell, -10 from ``subprocess``). Every worker reads the same settings, so
none is left serving.

It can go when a Hypercorn release exits non-zero when a worker does.
"""

from __future__ import annotations

import contextlib
import inspect
import multiprocessing
import os
import signal
import sys
from typing import NoReturn

from hypercorn.utils import load_application

DISTRIBUTION = "Hypercorn"
SUPPORTED = ">=0.18,<0.19"


def in_hypercorn_worker() -> bool:
    """Whether this is a worker of Hypercorn's main process, loading the app."""
    return multiprocessing.parent_process() is not None and loading_in_hypercorn()


def loading_in_hypercorn() -> bool:
    """Whether Hypercorn is importing the app right now (in a worker, or with ``--workers 0``
    in its main process)."""
    frame = inspect.currentframe()
    while frame is not None:
        if frame.f_code is load_application.__code__:
            return True
        frame = frame.f_back
    return False


def exit_serving(message: str) -> NoReturn:
    """Print ``message`` (one line) and exit non-zero, taking Hypercorn's main process along."""
    print(message, file=sys.stderr, flush=True)
    parent = multiprocessing.parent_process()
    if in_hypercorn_worker() and parent is not None and parent.pid is not None:
        with contextlib.suppress(ProcessLookupError):  # another worker ended it first
            os.kill(parent.pid, signal.SIGUSR1)
    raise SystemExit(1)
