"""What survives: a killed server, an erased person, a personalization in a worker."""

from __future__ import annotations

import sqlite3
import threading
import time

import numpy as np
import torch
from tests.service.conftest import Account, Server, make_service_data, propose_candidate

from tailorml.deploy.int8.onnx_int8 import INPUT_NAME, OUTPUT_NAME
from tailorml.registry.models import Registry
from tailorml.registry.people import PeopleStore
from tailorml.service.auth import add_person
from tailorml.service.crypto import ServerKey
from tailorml.service.jobs import person_frame
from tailorml.service.keyring import Keyring
from tailorml.service.runtime import Runtimes
from tailorml.soft.card import card_path

FIVE_MINUTES = 300_000


def test_every_acknowledged_upload_survives_kill_9(tmp_path, trained):
    service = make_service_data(tmp_path, trained)
    alice = service.people["alice"]
    server = Server(service).start()
    acknowledged: list[int] = []
    stop = threading.Event()
    start = int(time.time() * 1000) - 30 * 24 * 3_600_000

    def upload(offset: int) -> None:
        with server.client(alice.secret) as client:
            for index in range(offset, 10**6, 4):
                if stop.is_set():
                    return
                date = start + index * FIVE_MINUTES
                try:
                    answer = client.post(
                        "/api/v1/entries", json=[{"type": "sgv", "sgv": 100, "date": date}]
                    )
                except Exception:  # the server is gone: this upload was never acknowledged
                    return
                if answer.status_code == 200:
                    acknowledged.append(date)

    uploaders = [threading.Thread(target=upload, args=(k,)) for k in range(4)]
    for thread in uploaders:
        thread.start()
    deadline = time.monotonic() + 120
    while len(acknowledged) < 80 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(acknowledged) >= 80, "the uploads were not acknowledged"
    server.kill()  # SIGKILL, mid-stream
    stop.set()
    for thread in uploaders:
        thread.join()

    restarted = Server(service).start()
    with restarted.client(alice.secret) as client:
        stored = {e["date"] for e in client.get("/api/v1/entries", params={"count": 10000}).json()}
    restarted.kill()
    assert set(acknowledged) <= stored
    check = sqlite3.connect(service.data / "registry.sqlite").execute("PRAGMA integrity_check")
    assert check.fetchone()[0] == "ok"


def test_the_served_onnx_model_equals_torch(service_data, trained):
    registry = Registry(service_data.data)
    runtime = Runtimes(registry, service_data.data / "onnx").for_person("p-000000000000")
    windows = trained.test[:512].astype(np.float32)
    onnx_logits = runtime.session.run([OUTPUT_NAME], {INPUT_NAME: windows})[0]
    with torch.no_grad():
        torch_logits = trained.model(torch.as_tensor(windows)).numpy()
    assert np.abs(onnx_logits - torch_logits).max() <= 1e-5
    np.testing.assert_allclose(
        runtime.proba(windows), torch.softmax(torch.as_tensor(torch_logits), 1).numpy(), atol=1e-5
    )


def test_erasure_deletes_the_data_and_retires_models_trained_on_it(server, service_data, trained):
    store, registry = PeopleStore(service_data.data), Registry(service_data.data)
    person, token = add_person(store, "erin", "patient", "test")
    erin = Account(person.id, "erin", token)
    with server.client(erin.secret) as client:
        client.post(
            "/api/v1/entries",
            json=[{"type": "sgv", "sgv": 90 + i, "date": 1_620_000_000_000 + i} for i in range(5)],
        )
        status = {"device": "xDrip", "created_at": 1_620_000_000_000}
        client.post("/api/v1/devicestatus", json=status)
    candidate = propose_candidate(service_data.data, erin.id, trained, shift=0.03)
    model = registry.model(registry.candidate(candidate).model_id)
    assert model.path.exists()
    with server.client(erin.secret) as client:
        unconfirmed = client.delete("/api/v1/people/me")
        erased = client.delete("/api/v1/people/me", params={"confirm": erin.id})
        after = client.get("/api/v1/entries.json")
    assert unconfirmed.status_code == 422 and f"confirm={erin.id}" in unconfirmed.json()["message"]
    assert erased.status_code == 200
    assert erased.json() == {
        "entries": 5,
        "treatments": 0,
        "alerts": 5,
        "documents": 1,  # the devicestatus record
        "replaced": 0,
        "push_subscriptions": 0,  # erin subscribed no browser
        "tombstones": 0,  # and deleted no record (API v3 history)
        "retired_models": [model.id],
    }
    assert after.status_code == 401 and "erased" in after.json()["message"]
    assert store.entries(erin.id, limit=100) == [] and store.wrapped_key(erin.id) is None
    assert not model.path.exists() and registry.retired(erin.id) == [model.id]
    assert registry.active_model(erin.id).kind == "predefined"
    line = [e for e in registry.audit(erin.id) if e.action == "erase"][-1]
    assert line.details["entries"] == 5 and line.details["data_key"] == "deleted"


def test_a_personalization_request_runs_in_a_worker_and_is_recorded(server, service_data):
    carol = service_data.people["carol"]
    values = 140 + 40 * np.sin(np.arange(300) / 20)
    end = 1_700_500_000_000
    entries = [
        {"type": "sgv", "sgv": round(float(v)), "date": end - (299 - i) * FIVE_MINUTES}
        for i, v in enumerate(values)
    ]
    with server.client(carol.secret) as client:
        client.post("/api/v1/entries", json=entries)
        job = client.post("/api/v1/personalization")
        assert job.status_code == 202 and job.json()["status"] == "queued"
        again = client.post("/api/v1/personalization")
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            state = client.get(f"/api/v1/personalization/{job.json()['id']}").json()
            if state["status"] in ("done", "failed"):
                break
            time.sleep(0.5)
    assert again.status_code == 400 and "already under way" in again.json()["message"]
    assert state["status"] == "done", state
    session = Registry(service_data.data).session(state["session_id"])
    assert session.individual == carol.id
    # about 25 hours uploaded: the data gate refuses, and the predefined model stays
    assert session.refused_reason and "days" in session.refused_reason
    assert session.actor.startswith(f"service job {state['id']} (carol")
    # carol's readings are her own uploads: only the general data is simulated
    assert session.summary["synthetic"] is False
    assert session.summary["general_synthetic"] is True
    # the card the session wrote shows her readings: the worker deleted it (the review
    # page draws it in memory)
    assert not card_path(Registry(service_data.data), carol.id).exists()


def test_the_worker_puts_uploads_on_the_grid_without_inventing_readings(server, service_data):
    store = PeopleStore(service_data.data)
    person, token = add_person(store, "frank", "patient", "test")
    alice = Account(person.id, "frank", token)  # a person with only these uploads
    end = 1_600_300_000_000
    dates = [end - 3 * FIVE_MINUTES + 20_000, end - FIVE_MINUTES, end]  # one slot empty
    with server.client(alice.secret) as client:
        client.post(
            "/api/v1/entries",
            json=[
                {"type": "sgv", "sgv": s, "date": d, "utcOffset": 0}
                for s, d in zip((91, 93, 94), dates, strict=True)
            ]
            + [{"type": "mbg", "mbg": 300, "date": end - 2 * FIVE_MINUTES}],
        )
    keyring = Keyring(store, ServerKey.load(service_data.key_file, service_data.data))
    frame = person_frame(store, keyring, alice.id, 5)
    cgm = frame["cgm"].tolist()
    # 15 minutes on a 5-minute grid from the first reading: 91, an empty slot, 93, 94
    assert len(cgm) == 4 and cgm[0] == 91.0 and np.isnan(cgm[1]) and cgm[2:] == [93.0, 94.0]
    assert (frame["time"].diff().dropna() == np.timedelta64(5, "m")).all()  # mbg is not CGM
    assert set(frame["patient_id"]) == {alice.id}
