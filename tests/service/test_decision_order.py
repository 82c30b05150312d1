"""One person's readings are decided one batch at a time, also by two service processes on
one data directory (here: two `Service` objects, each with its own connections and its own
in-process locks, as two processes have): the alert state is read and the new decisions
stored under the store's write lock (`PeopleStore.decisions_of`), so a second decision
never starts from a state the first is about to change."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from tests.service.conftest import make_service_data
from tests.service.test_safe_alerts import NOW_S, ScriptedRuntime, trace

from tailorml.policy import AlertPolicy
from tailorml.service import live
from tailorml.service.auth import add_person
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey


@pytest.fixture(scope="module")
def made(tmp_path_factory, trained):
    return make_service_data(tmp_path_factory.mktemp("order"), trained)


def scripted_service(made, monkeypatch, hypo_of) -> Service:
    service = Service(
        made.data,
        ServerKey.load(made.key_file, made.data),
        database=made.database,
        clock=lambda: NOW_S,
    )
    policy = replace(AlertPolicy(), threshold=0.9)
    monkeypatch.setattr(service.runtimes, "for_person", lambda _: ScriptedRuntime(policy, hypo_of))
    return service


def test_two_processes_decide_one_persons_readings_one_after_the_other(made, monkeypatch):
    hypo_of = {95.0: 0.95}
    first = scripted_service(made, monkeypatch, hypo_of)
    second = scripted_service(made, monkeypatch, hypo_of)
    person, _ = add_person(first.store, "twoprocesses", "patient", "test")
    readings = trace([100] * 24 + [95, 95])
    first.upload_entries(person, readings)  # stored and decided: an alert, then snoozed
    spans: dict[str, tuple[float, float]] = {}
    real_state_before = live.state_before

    def slow_state_before(*args, **kwargs):
        time.sleep(0.3)  # a decision that takes a while: the other must wait for it
        return real_state_before(*args, **kwargs)

    monkeypatch.setattr(live, "state_before", slow_state_before)

    def decide(name: str, service: Service, reading_ms: int) -> None:
        real = service.live._decide

        def timed(*args, **kwargs):
            start = time.monotonic()
            try:
                return real(*args, **kwargs)
            finally:
                spans[name] = (start, time.monotonic())

        monkeypatch.setattr(service.live, "_decide", timed)
        service.live.decide(person.id, [reading_ms])

    threads = [
        threading.Thread(target=decide, args=("a", first, readings[-2]["date"])),
        threading.Thread(target=decide, args=("b", second, readings[-1]["date"])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (a_start, a_end), (b_start, b_end) = spans["a"], spans["b"]
    assert a_end <= b_start or b_end <= a_start  # never both inside at once
    # and the newest decisions are what one process deciding alone gives
    latest: dict[int, str] = {}
    for decision in first.live.history(person.id, limit=100):  # newest first
        latest.setdefault(decision["reading_ms"], decision["decision"])
    assert [latest[r["date"]] for r in readings[-2:]] == ["alert", "snoozed"]


def test_a_write_inside_the_decision_lock_is_part_of_it(made, monkeypatch):
    # a new person's first upload creates their data key while their readings are decided:
    # a nested write joins the held transaction (a savepoint) instead of failing
    service = scripted_service(made, monkeypatch, {})
    person, _ = add_person(service.store, "firstupload", "patient", "test")
    with service.store.decisions_of(person.id):
        service.keyring.cipher(person.id)  # writes the wrapped key
    assert service.store.wrapped_key(person.id) is not None
