"""The bus worker: relay orders run between a poll's transactions; failures are logged with
the bus name and counted (issues 9 and 10)."""

from __future__ import annotations

import logging
import threading

import pytest

from edge_agent.field.worker import POLL, RELAY, TECHNICIAN, BusWorker


class Driver:
    def close(self) -> None:
        pass


def test_relay_and_technician_jobs_run_between_a_polls_transactions() -> None:
    worker = BusWorker("bus1", Driver())
    order: list[str] = []
    started = threading.Event()
    release = threading.Event()

    def poll(_driver: object) -> None:
        order.append("read 1")
        started.set()
        release.wait(5)
        worker.preempt()  # what Dlt645Driver.poll does after each transaction
        order.append("read 2")

    worker.start()
    try:
        done = worker.submit(poll, POLL)
        started.wait(5)
        tech = worker.submit(lambda _d: order.append("technician"), TECHNICIAN)
        relay = worker.submit(lambda _d: order.append("relay"), RELAY)
        later = worker.submit(lambda _d: order.append("next poll"), POLL)
        release.set()
        for future in (done, tech, relay, later):
            future.result(5)
    finally:
        worker.stop()
    assert order == ["read 1", "relay", "technician", "read 2", "next poll"]


def test_failed_jobs_are_logged_with_the_bus_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    worker = BusWorker("bus7", Driver())
    worker.start()
    try:
        def fail(_driver: object) -> None:
            raise OSError("port gone")

        future = worker.submit(fail, POLL)
        with pytest.raises(OSError):
            future.result(5)
    finally:
        worker.stop()
    assert worker.failures == 1
    assert any(r.levelno == logging.WARNING and "bus bus7" in r.getMessage()
               for r in caplog.records)


def test_preempt_leaves_a_stop_and_polls_alone() -> None:
    worker = BusWorker("bus1", Driver())
    ran: list[str] = []
    worker.submit(lambda _d: ran.append("poll"), POLL)
    worker.preempt()  # nothing urgent: nothing runs
    assert ran == [] and worker.pending(POLL) == 1


def test_posted_jobs_run_in_order_and_their_failures_are_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    """`post` (poll jobs: no future each) keeps the priorities, logs and counts failures."""
    worker = BusWorker("bus3", Driver())
    order: list[str] = []
    gate = threading.Event()

    def fail(_driver: object) -> None:
        order.append("failing poll")
        raise OSError("no answer")

    worker.submit(lambda _d: gate.wait(5), TECHNICIAN)  # holds the bus while jobs queue
    worker.post(lambda _d: order.append("poll 1"))
    worker.post(fail)
    worker.post(lambda _d: order.append("relay"), RELAY)
    last = worker.submit(lambda _d: order.append("poll 2"), POLL)
    worker.start()
    try:
        gate.set()
        last.result(5)
    finally:
        worker.stop()
    assert order == ["relay", "poll 1", "failing poll", "poll 2"]
    assert worker.failures == 1 and worker.jobs_done == 5
    assert any("bus bus3" in r.getMessage() and "no answer" in r.getMessage()
               for r in caplog.records)
