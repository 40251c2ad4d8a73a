"""A dispatcher's pause, kept in the store so a console in another process can show it.

Every dispatcher records its own pause (see ``Dispatcher.pause``); a
:class:`PauseRecorder` is the same record for code that runs a dispatcher-like
loop of its own. A database error while recording is logged, never raised into
the dispatcher: the pause itself must not fail on it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import attrs

from loanstate.store._pauses import clear_pause, record_pause

if TYPE_CHECKING:
    from loanstate.dispatch._report import Pause
    from loanstate.store import SqlStore

__all__ = ["PauseRecorder"]

_log: Final = logging.getLogger("loanstate.dispatch")


@attrs.define
class PauseRecorder:
    """Persists a dispatcher's pause in the store, so a console in another process shows it.

    Give its ``on_paused``/``on_resumed`` to the dispatcher (or a
    :class:`DispatchMetrics` made with it). Creating it clears any pause
    ``worker_id`` left behind by an earlier run. A database error while
    recording is logged, never raised into the dispatcher.
    """

    store: SqlStore
    worker_id: str

    def __attrs_post_init__(self) -> None:
        clear_pause(self.store.engine, self.worker_id)

    def on_paused(self, pause: Pause) -> None:
        try:
            record_pause(
                self.store.engine,
                self.worker_id,
                cause=pause.cause,
                remedy=pause.remedy,
                message=pause.message,
                since=pause.since,
                now=self.store.now(),
            )
        except Exception:
            _log.exception("could not record the pause of %s in the store", self.worker_id)

    def on_resumed(self) -> None:
        try:
            clear_pause(self.store.engine, self.worker_id)
        except Exception:
            _log.exception("could not clear the pause of %s in the store", self.worker_id)
