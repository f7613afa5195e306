"""service/compat/hypercorn.py leans on how Hypercorn loads the app in its workers: these
checks fail loudly on an upgrade that changes it."""

from __future__ import annotations

import inspect

import hypercorn.asyncio.run
import hypercorn.trio.run
import hypercorn.utils

from service.compat.hypercorn import in_hypercorn_worker


def test_workers_load_the_app_through_load_application() -> None:
    parameters = list(inspect.signature(hypercorn.utils.load_application).parameters)
    assert parameters[:2] == ["path", "wsgi_max_body_size"]
    for worker_module in (hypercorn.asyncio.run, hypercorn.trio.run):
        assert "load_application(" in inspect.getsource(worker_module)


def test_this_process_is_not_taken_for_a_worker() -> None:
    assert not in_hypercorn_worker()
