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

Ended by a signal, the main process cannot release the named semaphores of its
``shutdown_event`` (a ``multiprocessing`` Event, five semaphores), and Python's resource
tracker then prints a two-line warning about them after the one line. So the worker releases
them first, as the main process would at a normal exit: it finds the event on its own stack
(the ``shutdown_event`` argument of Hypercorn's worker function), unlinks each semaphore and
tells the shared resource tracker. That relies on CPython's private ``Event._cond``,
``Event._flag``, ``Condition._lock`` / ``_sleeping_count`` / ``_woken_count`` /
``_wait_semaphore``, ``SemLock._semlock.name`` and ``multiprocessing.resource_tracker``.

It can go when a Hypercorn release exits non-zero when a worker does.
"""

from __future__ import annotations

import _multiprocessing  # type: ignore[import-not-found]
import contextlib
import inspect
import multiprocessing
import os
import signal
import sys
from multiprocessing import resource_tracker
from typing import Any, NoReturn

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
    parent = multiprocessing.parent_process()
    if in_hypercorn_worker() and parent is not None and parent.pid is not None:
        if not release_semaphores(_shutdown_event_on_the_stack()):
            raise SystemExit(1)  # another worker says it, and ends the main process
        print(message, file=sys.stderr, flush=True)
        with contextlib.suppress(ProcessLookupError):
            os.kill(parent.pid, signal.SIGUSR1)
        raise SystemExit(1)
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(1)


def _shutdown_event_on_the_stack() -> Any:
    frame = inspect.currentframe()
    while frame is not None:
        event = frame.f_locals.get("shutdown_event")
        if event is not None:
            return event
        frame = frame.f_back
    return None


def event_semaphores(event: Any) -> list[Any]:
    """The named semaphores behind a ``multiprocessing`` Event."""
    condition = event._cond
    return [
        condition._lock,
        condition._sleeping_count,
        condition._woken_count,
        condition._wait_semaphore,
        event._flag,
    ]


def release_semaphores(event: Any) -> bool:
    """Unlink ``event``'s semaphores and forget them in the resource tracker.

    False when another worker released them first: of several workers that stop on the same
    bad setting, one speaks for all.
    """
    if event is None:
        return True
    released = False
    for semaphore in event_semaphores(event):
        name = getattr(semaphore._semlock, "name", None)
        if name is None:
            continue
        try:
            _multiprocessing.sem_unlink(name)
        except OSError:  # released already
            continue
        resource_tracker.unregister(name, "semaphore")
        released = True
    return released
