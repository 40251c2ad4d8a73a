"""The dispatcher: drains a :class:`~loanstate.store.SqlStore` outbox through a notifier.

Guarantees, whatever crashes in between (the docs' "Durable delivery" page
says more):

* **at least once**: an event leaves the outbox only when the notifier
  returned a receipt for it (or an operator skipped it); a worker that dies
  holding events leaves leases that expire, and another worker (or the same
  one restarted under the same ``worker_id``, at once) takes them over;
* **exactly once in effect**: every retry carries the event's ``request_id``,
  which the platform uses to recognise a replay;
* **order per loan**: a loan's next event is claimed only after the previous
  one was acknowledged or resolved by an operator; many loans are in flight
  at once (``concurrency``).

Transient failures are retried with jittered exponential backoff: first a few
quick tries in process (through stamina), then durably, by rescheduling the
event in the outbox. A permanent failure, or a transient one that has lasted
``RetryPolicy.max_age``, *parks* the loan: its later events wait, other loans
go on, and an operator decides (:meth:`SqlStore.retry` / :meth:`SqlStore.skip`).
A systemic failure (:class:`~loanstate.SystemicDeliveryError`: credentials,
clock, TLS, an unreachable gateway) parks nothing: delivery pauses
(:class:`Pause`, also recorded in the store for the console) and resumes when a
probe event goes through.

The loop exists once, for asyncio (``_loop.py``); :class:`Dispatcher` and
:class:`AsyncDispatcher` are its two faces (``_faces.py``).
"""

from loanstate.dispatch._faces import AsyncDispatcher, Dispatcher
from loanstate.dispatch._policy import RetryPolicy
from loanstate.dispatch._recorder import PauseRecorder
from loanstate.dispatch._report import Attempt, DispatchReport, Pause

__all__ = ["AsyncDispatcher", "Attempt", "DispatchReport", "Dispatcher", "Pause", "PauseRecorder", "RetryPolicy"]
