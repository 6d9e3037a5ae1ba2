"""One worker thread per bus: the only code that uses that bus while the daemon runs.

Jobs wait in a priority queue: relay orders (from the head end or a top-up) go ahead of
technician requests, which go ahead of routine polling.  A poll job is one meter's poll, so
a relay order waits at most for the transaction on the wire and the poll in progress.
Every job that raises is logged at WARNING with the bus name and counted in `failures`.
A job is a callable run on the worker's thread with the bus's driver; its result or error
comes back through a future (`submit`), or nowhere (`post`: a poll job reports through its
cycle, and 2,048 futures, each with its lock and condition, would cost ~2.5 MB per cycle).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

RELAY, TECHNICIAN, POLL = 0, 1, 5


def outcome(future: Future[Any], timeout: float) -> Any:
    """The result of a submitted job, waited for at most `timeout` seconds.  A job still
    queued then is withdrawn and `TimeoutError` raised: a relay order answered "failed" must
    not move the relay later, unrecorded.  A job already on the wire is waited for: its
    outcome is the answer."""
    try:
        return future.result(timeout)
    except TimeoutError:
        if future.cancel():
            raise TimeoutError(f"not carried out: bus busy for {timeout:g} s") from None
        return future.result()


class BusWorker:
    def __init__(self, name: str, driver: Any) -> None:
        self.name = name
        self.driver = driver
        self._jobs: queue.PriorityQueue[tuple[int, int, Callable[[Any], Any] | None,
                                              Future[Any] | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._run, name=f"bus {name}", daemon=True)
        self.busy = threading.Event()
        self.jobs_done = 0  # written by this worker's thread only
        self.failures = 0  # likewise: jobs that raised (logged at WARNING with the bus name)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Callable[[Any], Any], priority: int = POLL) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((priority, next(self._order), job, future))
        return future

    def post(self, job: Callable[[Any], Any], priority: int = POLL) -> None:
        """Queue a job whose result nobody waits for (its failure is logged and counted)."""
        self._jobs.put((priority, next(self._order), job, None))

    def pending(self, priority: int | None = None) -> int:
        with self._jobs.mutex:
            return sum(1 for p, *_ in self._jobs.queue if priority is None or p == priority)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the job in flight, drop the rest, and end the thread."""
        self._jobs.put((-1, next(self._order), None, Future()))
        self._thread.join(timeout)

    def preempt(self) -> None:
        """Run the relay and technician jobs waiting now, on this (the bus) thread.

        A poll calls this between its transactions, so an order waits for one transaction,
        not for a whole meter's poll.  Only the bus thread may call it.
        """
        while True:
            with self._jobs.mutex:
                head = self._jobs.queue[0] if self._jobs.queue else None
            if head is None or head[0] >= POLL or head[2] is None:
                return
            item = self._jobs.get_nowait()
            if item[2] is None or item[0] >= POLL:  # a stop (or a poll) got there first
                self._jobs.put(item)
                return
            self._execute(item[2], item[3])

    def _execute(self, job: Callable[[Any], Any], future: Future[Any] | None) -> None:
        if future is not None and not future.set_running_or_notify_cancel():
            return
        self.busy.set()
        try:
            result = job(self.driver)
        except BaseException as exc:  # the future carries it to whoever waits
            self.failures += 1
            log.warning("bus %s: job failed: %s", self.name, exc)
            if future is not None:
                future.set_exception(exc)
        else:
            if future is not None:
                future.set_result(result)
        finally:
            self.jobs_done += 1

    def _run(self) -> None:
        while True:
            _, _, job, future = self._jobs.get()
            if job is None:
                break
            try:
                self._execute(job, future)
            finally:
                self.busy.clear()
        while not self._jobs.empty():
            _, _, job, future = self._jobs.get_nowait()
            if job is not None and future is not None:
                future.cancel()
        self.driver.close()
