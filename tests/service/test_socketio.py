"""Nightscout's socket.io as AndroidAPS' NSClient v3 uses it with "use websockets"
(NSClientV3Service.kt): `/storage` `subscribe` {accessToken, collections} acked as
cgm-remote-monitor's lib/api3/storageSocket.js acks it, then `create`/`update`/`delete`
{colName, doc | identifier}; `/alarm` acked as alarmSocket.js acks it.

The server is a real uvicorn on a free port (python-socketio's AsyncClient over
long-polling, upgraded to WebSocket as AndroidAPS' client does); the records are written
through a second `Service` on the same data directory, as another API process would, so an
event can only reach the subscriber through the store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time

import httpx
import pytest
import socketio
import uvicorn
from fastapi.testclient import TestClient

from tailorml.registry.people import PeopleStore
from tailorml.service import socketio_server
from tailorml.service.app import create_app
from tailorml.service.auth import add_person, rotate_token
from tailorml.service.core import Service
from tailorml.service.crypto import ServerKey

# what AndroidAPS asks for (NSClientV3Service.onConnectStorage); "foods" is no Nightscout
# collection (it is "food"), so Nightscout and tailorml leave it out of the ack
AAPS_COLLECTIONS = ["devicestatus", "entries", "profile", "treatments", "foods", "settings"]
POLL = 0.1


@contextlib.contextmanager
def serving(made):
    """A real uvicorn on a free port serving the app on `made` (one API process); its
    socket.io poller polls every 0.1 s."""
    service = Service(made.data, ServerKey.load(made.key_file, made.data), database=made.database)
    app = create_app(service, run_jobs=False)
    app.state.socketio.poll_seconds = POLL
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="wsproto")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def live(made):
    """(base url, another process's HTTP client on the same data directory)."""
    other = Service(made.data, ServerKey.load(made.key_file, made.data), database=made.database)
    with serving(made) as url, TestClient(create_app(other, run_jobs=False)) as client:
        yield url, client


class Listener:
    """One socket.io connection to a namespace; what arrives is queued by event name."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url, self.namespace = url, namespace
        self.client = socketio.AsyncClient(reconnection=False)
        self.events: asyncio.Queue = asyncio.Queue()
        for name in ("create", "update", "delete", "alarm", "urgent_alarm", "clear_alarm"):
            self.client.on(name, self._queued(name), namespace=namespace)

    def _queued(self, name):
        async def put(data):
            await self.events.put((name, data))

        return put

    async def __aenter__(self) -> Listener:
        await self.client.connect(self.url, namespaces=[self.namespace], wait_timeout=10)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.client.disconnect()

    async def subscribe(self, message) -> dict:
        return await self.client.call("subscribe", message, namespace=self.namespace, timeout=10)

    async def next(self, timeout: float = 5.0) -> tuple[str, dict]:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def nothing(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        assert self.events.empty(), f"unexpected: {self.events.get_nowait()}"


def run(scenario):
    return asyncio.run(asyncio.wait_for(scenario, 60))


def test_a_good_token_is_acked_with_the_collections_and_a_bad_one_refused(live, made):
    url, other = live
    alice = made.people["alice"]

    async def scenario():
        async with Listener(url, "/storage") as storage:
            # long-polling first, then upgraded, as AndroidAPS' client connects
            assert storage.client.transport() == "websocket"
            assert await storage.subscribe({"accessToken": "tm_not-a-token"}) == {
                "success": False,
                "message": "Missing or bad accessToken",
            }
            assert await storage.subscribe({"collections": ["entries"]}) == {
                "success": False,
                "message": "Missing or bad accessToken",
            }
            assert await storage.subscribe(
                {"accessToken": alice.token, "collections": AAPS_COLLECTIONS}
            ) == {
                "success": True,
                "collections": ["devicestatus", "entries", "profile", "treatments", "settings"],
            }
            assert await storage.subscribe(
                {"accessToken": alice.token, "collections": ["foods"]}
            ) == {"success": False, "message": "Unauthorized to receive any collection"}
            # the API v3 JWT of the token opens it too
            jwt = other.get(f"/api/v2/authorization/request/{alice.token}").json()["token"]
            assert await storage.subscribe({"accessToken": jwt, "collections": ["entries"]}) == {
                "success": True,
                "collections": ["entries"],
            }
        async with Listener(url, "/alarm") as alarm:
            assert await alarm.subscribe({"accessToken": "nope"}) == {
                "success": False,
                "message": "Missing or bad accessToken",
            }
            assert await alarm.subscribe({"accessToken": alice.token}) == {
                "success": True,
                "message": "Subscribed for alarms",
            }
        with pytest.raises(socketio.exceptions.ConnectionError):  # Nightscout's "/": not served
            async with Listener(url, "/"):
                pass
        async with Listener(url, "/storage") as storage:  # an unassigned clinician
            answer = await storage.subscribe(
                {"accessToken": made.people["mallory"].token, "patient": alice.id}
            )
            assert answer["success"] is False
            assert answer["message"].startswith("Unauthorized to receive any collection")

    run(scenario())


def test_an_entry_stored_by_another_process_arrives_as_a_create_to_its_patient_only(live, made):
    url, other = live
    alice, carol = made.people["alice"], made.people["carol"]
    now = int(time.time() * 1000) // 1000 * 1000
    reading = {"type": "sgv", "sgv": 123, "date": now - 60_000, "direction": "Flat"}

    async def scenario():
        async with (
            Listener(url, "/storage") as mine,
            Listener(url, "/storage") as hers,
        ):
            ack = await mine.subscribe({"accessToken": alice.token, "collections": ["entries"]})
            assert ack == {"success": True, "collections": ["entries"]}
            ack = await hers.subscribe({"accessToken": carol.token, "collections": ["entries"]})
            assert ack == {"success": True, "collections": ["entries"]}
            before = other.get("/api/v3/lastModified", headers=alice.bearer).json()
            after = before["result"]["collections"].get("entries", 0)
            posted = await asyncio.to_thread(
                other.post, "/api/v1/entries", json=[reading], headers=alice.secret
            )
            assert posted.status_code == 200, posted.text
            event, data = await mine.next()
            history = other.get(f"/api/v3/entries/history/{after}", headers=alice.bearer)
            (expected,) = history.json()["result"]
            assert event == "create"
            assert data == {"colName": "entries", "doc": expected}
            assert (data["doc"]["sgv"], data["doc"]["date"]) == (123, now - 60_000)
            assert data["doc"]["srvCreated"] == data["doc"]["srvModified"] > after
            await hers.nothing(5 * POLL)

            posted = await asyncio.to_thread(
                other.post,
                "/api/v1/entries",
                json=[reading | {"sgv": 140}],
                headers=made.people["carol"].secret,
            )
            assert posted.status_code == 200, posted.text
            event, data = await hers.next()
            assert (event, data["colName"], data["doc"]["sgv"]) == ("create", "entries", 140)
            await mine.nothing(5 * POLL)

    run(scenario())


def test_a_treatment_changed_and_deleted_over_api_v3_arrives_as_update_and_delete(live, made):
    url, other = live
    alice = made.people["alice"]
    created_at = "2026-01-02T03:04:05.000Z"
    note = {"eventType": "Note", "created_at": created_at, "notes": "a", "identifier": "aaps-1"}

    async def scenario():
        async with Listener(url, "/storage") as aaps:
            ack = await aaps.subscribe({"accessToken": alice.token, "collections": ["treatments"]})
            assert ack["success"] is True

            def write(method, path, **kw):
                answer = other.request(method, path, headers=alice.bearer, **kw)
                assert answer.status_code in (200, 201), answer.text

            await asyncio.to_thread(write, "POST", "/api/v3/treatments", json=note)
            event, data = await aaps.next()
            assert (event, data["doc"]["identifier"], data["doc"]["notes"]) == (
                "create",
                "aaps-1",
                "a",
            )
            await asyncio.to_thread(
                write, "PATCH", "/api/v3/treatments/aaps-1", json={"notes": "b"}
            )
            event, data = await aaps.next()
            assert (event, data["colName"], data["doc"]["notes"]) == ("update", "treatments", "b")
            assert data["doc"]["srvModified"] > data["doc"]["srvCreated"]
            await asyncio.to_thread(write, "DELETE", "/api/v3/treatments/aaps-1")
            assert await aaps.next() == (
                "delete",
                {"colName": "treatments", "identifier": "aaps-1"},
            )

    run(scenario())


def test_a_quiet_collection_still_gets_its_change_after_others_moved_on(live, made):
    """A profile changes rarely, devicestatus every 5 minutes: the quiet collection's
    cursor follows the busy one's (the poll reads what changed since, not the history),
    and the profile stored after that still arrives."""
    url, other = live
    carol = made.people["carol"]
    now = int(time.time() * 1000) // 1000 * 1000
    status = {"device": "openaps://phone", "created_at": now - 50_000, "pump": {"clock": "x"}}
    profile = {"defaultProfile": "Day", "startDate": "2026-01-01T00:00:00.000Z", "store": {}}

    async def scenario():
        async with Listener(url, "/storage") as aaps:
            ack = await aaps.subscribe(
                {"accessToken": carol.token, "collections": ["devicestatus", "profile"]}
            )
            assert ack == {"success": True, "collections": ["devicestatus", "profile"]}
            for collection, record in (("devicestatus", status), ("profile", profile)):
                posted = await asyncio.to_thread(
                    other.post, f"/api/v1/{collection}", json=[record], headers=carol.secret
                )
                assert posted.status_code == 200, posted.text
                event, data = await aaps.next()
                assert (event, data["colName"]) == ("create", collection)
                key = "device" if collection == "devicestatus" else "defaultProfile"
                assert data["doc"][key] == record[key]
                await asyncio.sleep(3 * POLL)  # rounds pass: profile's cursor moves up
            await aaps.nothing(3 * POLL)

    run(scenario())


def test_connections_per_account_are_bounded(live, made, monkeypatch):
    url, _ = live
    carol = made.people["carol"]
    monkeypatch.setattr(socketio_server, "MAX_PER_ACCOUNT", 2)

    async def scenario():
        async with (
            Listener(url, "/storage") as first,
            Listener(url, "/alarm") as second,
            Listener(url, "/storage") as third,
        ):
            assert (await first.subscribe({"accessToken": carol.token}))["success"] is True
            assert (await second.subscribe({"accessToken": carol.token}))["success"] is True
            refused = await third.subscribe({"accessToken": carol.token})
            assert refused["success"] is False
            assert "2 connections" in refused["message"]

    run(scenario())


def test_an_urgent_low_stored_by_another_process_sounds_on_its_patients_alarm_only(live, made):
    url, other = live
    alice, carol = made.people["alice"], made.people["carol"]
    now = int(time.time() * 1000) // 1000 * 1000
    low = {"type": "sgv", "sgv": 50, "date": now - 30_000, "direction": "Flat"}  # ≤ 55: urgent

    async def scenario():
        async with Listener(url, "/alarm") as mine, Listener(url, "/alarm") as hers:
            assert (await mine.subscribe({"accessToken": alice.token}))["success"] is True
            assert (await hers.subscribe({"accessToken": carol.token}))["success"] is True
            posted = await asyncio.to_thread(
                other.post, "/api/v1/entries", json=[low], headers=alice.secret
            )
            assert posted.status_code == 200, posted.text
            event, data = await mine.next()
            shown = other.get("/api/v1/alerts/current", headers=alice.secret).json()
            assert shown["decision"] == "urgent" and shown["reading_ms"] == now - 30_000
            assert event == "urgent_alarm"
            assert (data["level"], data["eventName"], data["group"]) == (2, "low", "default")
            assert data["title"] == "tailorml: Urgent low"
            assert data["message"] == f"CGM 50 mg/dL. {shown['reason']}"
            assert data["key"] == f"tailorml_{shown['id']}"
            await hers.nothing(5 * POLL)

    run(scenario())


def test_a_session_opened_in_one_process_is_answered_through_another(live, made):
    """`serve --workers N`: uvicorn's workers share the port, so a client's next long-poll
    may reach a worker that does not hold its Engine.IO session; that worker relays it to
    the one that does. Engine.IO v4 over long-polling, packet by packet (socket.io-client
    2.x, AndroidAPS' client, speaks the same protocol)."""
    first, _ = live
    alice = made.people["alice"]
    with serving(made) as second, httpx.Client(timeout=10) as http:
        opened = http.get(f"{first}/socket.io/", params={"EIO": "4", "transport": "polling"})
        assert opened.status_code == 200 and opened.text.startswith("0")
        sid = json.loads(opened.text[1:])["sid"]
        poll = {"EIO": "4", "transport": "polling", "sid": sid}
        through = f"{second}/socket.io/"

        def sent(packet: str) -> None:
            answer = http.post(through, params=poll, content=packet.encode())
            assert (answer.status_code, answer.text) == (200, "OK")

        sent("40/storage,")
        connected = http.get(through, params=poll)
        assert connected.status_code == 200 and connected.text.startswith("40/storage,{")
        subscribe = {"accessToken": alice.token, "collections": ["entries"]}
        sent("42/storage,0" + json.dumps(["subscribe", subscribe]))
        acked = http.get(through, params=poll)
        assert acked.headers["cache-control"] == "no-store"
        assert acked.text == '43/storage,0[{"success":true,"collections":["entries"]}]'
        # an unknown session is still refused, in either process
        gone = http.get(through, params=poll | {"sid": sid[:9] + "x" * 16})
        assert gone.status_code == 400


def test_a_rotated_token_ends_its_subscription(live, made, monkeypatch):
    url, _ = live
    monkeypatch.setattr(socketio_server, "REAUTH_SECONDS", 0.0)  # checked every round
    store = PeopleStore(made.database or made.data)
    dave, token = add_person(store, "dave", "patient", "test")

    async def scenario():
        async with Listener(url, "/storage") as phone:
            ack = await phone.subscribe({"accessToken": token, "collections": ["entries"]})
            assert ack == {"success": True, "collections": ["entries"]}
            await asyncio.sleep(5 * POLL)
            assert phone.client.connected  # still good: kept
            await asyncio.to_thread(rotate_token, store, dave, "test")
            deadline = time.monotonic() + 5
            while phone.client.connected:
                assert time.monotonic() < deadline, "still subscribed with a rotated token"
                await asyncio.sleep(POLL)

    run(scenario())


def test_a_clinician_follows_a_consenting_patient_until_the_consent_is_withdrawn(live, made):
    url, other = live
    alice, bob = made.people["alice"], made.people["bob"]  # bob is assigned to alice
    now = int(time.time() * 1000) // 1000 * 1000
    reading = {"type": "sgv", "sgv": 171, "date": now - 90_000}

    async def scenario():
        async with Listener(url, "/storage") as clinic:
            ack = await clinic.subscribe(
                {"accessToken": bob.token, "patient": alice.id, "collections": ["entries"]}
            )
            assert ack == {"success": True, "collections": ["entries"]}
            posted = await asyncio.to_thread(
                other.post, "/api/v1/entries", json=[reading], headers=alice.secret
            )
            assert posted.status_code == 200, posted.text
            event, data = await clinic.next()
            assert (event, data["doc"]["sgv"], data["doc"]["date"]) == ("create", 171, now - 90_000)
            withdrawn = await asyncio.to_thread(
                other.put,
                "/api/v1/people/me/consent",
                json={"clinicians": {bob.id: False}},
                headers=alice.secret,
            )
            assert withdrawn.status_code == 200, withdrawn.text
            deadline = time.monotonic() + 5
            while clinic.client.connected:
                assert time.monotonic() < deadline, "still following without consent"
                await asyncio.sleep(POLL)

    run(scenario())
