"""Nightscout's socket.io for the clients that use it: AndroidAPS' NSClient v3 with "use
websockets" (NSClientV3Service.kt), Nightscout's `/storage` and `/alarm` namespaces
(cgm-remote-monitor lib/api3/storageSocket.js, alarmSocket.js), on python-socketio.

- **`/storage`**: a client emits `subscribe` `{accessToken, collections}` and is acked
  `{success: true, collections: [...]}` (the asked ones this service keeps; all six without
  a list), or `{success: false, message}` for a bad token, as Nightscout answers. Then each
  stored, changed or deleted record of those collections arrives as `create` or `update`
  `{colName, doc}` (the doc as API v3's history answers it: `identifier`, `srvModified`,
  `srvCreated`) or `delete` `{colName, identifier}`.
- **`/alarm`**: `subscribe` `{accessToken}` is acked `{success: true, message: "Subscribed
  for alarms"}`; tailorml's own fresh alert decisions arrive as `alarm` (level 1) or
  `urgent_alarm` (level 2, the urgent low), and `clear_alarm` when the next decision sounds
  none, in the shape Nightscout's notifications have (level, title, message, eventName,
  group, key, plugin). A client's `ack` is accepted and changes nothing: tailorml's snooze
  is its policy's, one client cannot silence another's alarm.

The token is the account's (raw, or the API v3 JWT, or `secret` as the api-secret SHA-1),
resolved as an HTTP request's credential (`service.auth.resolve`); a patient sees their own
data, a clinician an assigned, consenting patient named by `patient` (tailorml's addition
to the message). Reads go through `Service.v3_history`: the same access check, consent and
audit as `GET /api/v3/{collection}/history`.

**Several processes.** Nothing is announced in memory: each process polls, every
`POLL_SECONDS`, for the people subscribed to it, whether each subscribed collection changed
after what it last sent (`_changed`), and emits that history, oldest first. A change stored
by any process on the same data directory therefore reaches every subscriber within a poll
interval plus the time to open it. Server times come from one strictly increasing clock per
data directory, taken inside the writing transaction, so "after the last sent" skips
nothing. Engine.IO sessions, which live in one process, are reached from the others through
`Relay`.

**Bounds.** Records are opened off the event loop, at most `BATCH` per collection per hop
and `BATCHES` hops per collection per round (the rest follows in the next round, still in
order: AndroidAPS keeps the newest `srvModified` it was sent, so nothing may be skipped);
at most `MAX_PER_ACCOUNT` subscribed connections per account and `MAX_CONNECTIONS` in all
per process; a connection that has not subscribed after `SUBSCRIBE_SECONDS`, or failed
`MAX_SUBSCRIBES` times, is closed; every `REAUTH_SECONDS` each subscription's credential
is checked again (a rotated or revoked token, a withdrawn consent ends it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import socketio
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tailorml.errors import TailormlError
from tailorml.policy import MINUTE_MS
from tailorml.registry.people import V3_TABLES, Person
from tailorml.service.auth import resolve
from tailorml.service.core import Service

log = logging.getLogger("tailorml.service")

STORAGE, ALARM = "/storage", "/alarm"
PATH = "/socket.io/"
COLLECTIONS = tuple(V3_TABLES)
# Nightscout's messages (lib/api3/const.json), which clients log
BAD_TOKEN = "Missing or bad accessToken"
UNAUTHORIZED_TO_ANY = "Unauthorized to receive any collection"
SUBSCRIBED_ALARMS = "Subscribed for alarms"
SOUNDING = {"alert": (1, "alarm"), "urgent": (2, "urgent_alarm")}

POLL_SECONDS = 2.0
BATCH = 100
BATCHES = 5
MAX_PER_ACCOUNT = 10
MAX_CONNECTIONS = 2_000
SUBSCRIBE_SECONDS = 30.0
MAX_SUBSCRIBES = 5
REAUTH_SECONDS = 60.0
MAX_MESSAGE_BYTES = 64 * 1024
RELAY_SECONDS = 90.0  # a relayed long-poll waits at most the ping interval (25 s)


class Refused(TailormlError):
    """A subscription this connection may not have (the ack's message says why)."""


@dataclass
class Subscription:
    """One connection's subscription in one namespace."""

    namespace: str
    sid: str
    reader: Person
    subject: Person
    patient: str | None  # as the client named it (None: the reader's own data)
    credentials: dict[str, str]
    collections: tuple[str, ...]
    checked: float  # when the credential was last resolved (monotonic)


@dataclass
class Watch:
    """What one process polls for one reader and subject in one namespace: the newest
    server time sent per collection (storage), the newest decision seen (alarm)."""

    namespace: str
    reader: Person
    subject: Person
    patient: str | None
    sids: set[str] = field(default_factory=set)
    cursor: dict[str, int] = field(default_factory=dict)
    alert_id: int | None = None
    sounding: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.reader.id, self.subject.id)

    def room(self, collection: str = "") -> str:
        return f"{self.namespace}|{self.reader.id}|{self.subject.id}|{collection}"


def _text(message: dict, key: str) -> str | None:
    value = message.get(key)
    return value if isinstance(value, str) and 0 < len(value) <= 2_000 else None


class SocketHub:
    """The socket.io server of one API process and the poller that feeds it."""

    def __init__(self, service: Service, poll_seconds: float = POLL_SECONDS) -> None:
        self.service = service
        self.poll_seconds = poll_seconds
        self.sio = socketio.AsyncServer(
            async_mode="asgi",
            # Nightscout's default namespace (authorize, dataUpdate: its web client and the
            # old NSClient) is not served: a connection to it is refused
            namespaces=[STORAGE, ALARM],
            cors_allowed_origins=None,  # same origin only (browsers); apps send no Origin
            max_http_buffer_size=MAX_MESSAGE_BYTES,
            logger=False,
            engineio_logger=False,
        )
        self.connected: dict[tuple[str, str], float] = {}  # (namespace, sid) -> since
        self.failures: dict[tuple[str, str], int] = {}
        self.subs: dict[tuple[str, str], Subscription] = {}
        self.watches: dict[tuple[str, str, str], Watch] = {}
        self._task: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()
        self.relay = Relay(lambda: service.data_dir, self.sio)
        # an Engine.IO session id names the process that holds the session
        self.sio.eio.generate_id = lambda: f"{self.relay.tag}.{secrets.token_urlsafe(12)}"
        self._closed = False
        for namespace in (STORAGE, ALARM):
            self._handlers(namespace)

    # -- connections ------------------------------------------------------------------------

    def _handlers(self, namespace: str) -> None:
        sio = self.sio

        @sio.on("connect", namespace=namespace)
        async def connect(sid, environ, auth=None):
            if len(self.connected) >= MAX_CONNECTIONS:
                raise socketio.exceptions.ConnectionRefusedError("too many connections")
            self.connected[(namespace, sid)] = time.monotonic()
            loop = asyncio.get_running_loop()
            loop.call_later(SUBSCRIBE_SECONDS, self._close_unsubscribed, namespace, sid)

        @sio.on("disconnect", namespace=namespace)
        async def disconnect(sid, *reason):
            self.connected.pop((namespace, sid), None)
            self.failures.pop((namespace, sid), None)
            await self._unsubscribe(namespace, sid)

        @sio.on("subscribe", namespace=namespace)
        async def subscribe(sid, message=None, *_):
            return await self.subscribe(namespace, sid, message)

        if namespace == ALARM:

            @sio.on("ack", namespace=namespace)
            async def ack(sid, *args):  # tailorml's snooze is its policy's: nothing to do
                log.info("socket.io alarm ack from %s ignored", sid)

    def _close_unsubscribed(self, namespace: str, sid: str) -> None:
        if (namespace, sid) in self.connected and (namespace, sid) not in self.subs:
            self._later(self.sio.disconnect(sid, namespace=namespace))

    def _later(self, work) -> None:
        task = asyncio.ensure_future(work)
        self._pending.add(task)  # held until done (the loop keeps only weak references)
        task.add_done_callback(self._pending.discard)

    async def subscribe(self, namespace: str, sid: str, message: Any) -> dict:
        """Nightscout's `subscribe`: its ack, and the connection joined to its rooms."""
        if (namespace, sid) not in self.connected:
            return {"success": False, "message": BAD_TOKEN}
        message = message if isinstance(message, dict) else {}
        credentials = {
            key: value
            for key in ("accessToken", "jwtToken", "secret")
            if (value := _text(message, key)) is not None
        }
        patient = _text(message, "patient")
        try:
            reader, subject = await run_in_threadpool(self._authorize, credentials, patient)
        except TailormlError as error:
            failed = self.failures.get((namespace, sid), 0) + 1
            self.failures[(namespace, sid)] = failed
            if failed >= MAX_SUBSCRIBES:
                self._later(self.sio.disconnect(sid, namespace=namespace))
            shown = str(error) if isinstance(error, Refused) else BAD_TOKEN
            return {"success": False, "message": shown}
        if namespace == STORAGE:
            asked = message.get("collections")
            wanted = asked if isinstance(asked, list) else list(COLLECTIONS)
            collections = tuple(dict.fromkeys(c for c in wanted[:32] if c in COLLECTIONS))
            if not collections:
                return {"success": False, "message": UNAUTHORIZED_TO_ANY}
        else:
            collections = ()
        await self._unsubscribe(namespace, sid)  # a second subscribe replaces the first
        held = sum(1 for s in self.subs.values() if s.reader.id == reader.id)
        if held >= MAX_PER_ACCOUNT:
            return {
                "success": False,
                "message": f"this account has {held} connections to this server already; close one",
            }
        sub = Subscription(
            namespace, sid, reader, subject, patient, credentials, collections, time.monotonic()
        )
        await self._watch(sub)
        if namespace == ALARM:
            return {"success": True, "message": SUBSCRIBED_ALARMS}
        return {"success": True, "collections": list(collections)}

    def _authorize(self, credentials: dict[str, str], patient: str | None) -> tuple[Person, Person]:
        """The reader (as an HTTP request's credentials resolve) and whose data they read."""
        token = credentials.get("accessToken") or credentials.get("jwtToken")
        secret = credentials.get("secret")
        if not token and not secret:
            raise TailormlError(BAD_TOKEN)
        reader = resolve(
            self.service.store,
            api_secret=secret,
            authorization=f"Bearer {token}" if token else None,
            jwt_key=self.service.jwt_key,
        )
        try:
            subject = self.service.subject(reader, patient, "subscribe_socketio")
        except TailormlError as error:
            raise Refused(f"{UNAUTHORIZED_TO_ANY}: {error}") from None
        return reader, subject

    async def _watch(self, sub: Subscription) -> None:
        key = (sub.namespace, sub.reader.id, sub.subject.id)
        found = self.watches.get(key)
        new = [c for c in sub.collections if found is None or c not in found.cursor]
        newest, current = {}, None
        if new:  # where this subscription's collections start
            newest = await run_in_threadpool(self.service.store.last_modified, sub.subject.id)
        if sub.namespace == ALARM and found is None:  # the alarm sounding now is not sent
            current = await run_in_threadpool(self._newest_decision, sub.subject)
        # no await from here on: a subscribe of the same reader and subject that ran
        # meanwhile has made the watch this one joins
        watch = self.watches.get(key)
        if watch is None:
            watch = self.watches[key] = Watch(sub.namespace, sub.reader, sub.subject, sub.patient)
            watch.alert_id = current["id"] if current else None
            watch.sounding = bool(current and current["decision"] in SOUNDING)
        for collection in new:
            watch.cursor.setdefault(collection, newest.get(collection, 0))
        watch.sids.add(sub.sid)
        self.subs[(sub.namespace, sub.sid)] = sub
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        for collection in sub.collections or ("",):
            await self.sio.enter_room(sub.sid, watch.room(collection), namespace=sub.namespace)

    async def _unsubscribe(self, namespace: str, sid: str) -> None:
        sub = self.subs.pop((namespace, sid), None)
        if sub is None:
            return
        key = (namespace, sub.reader.id, sub.subject.id)
        watch = self.watches.get(key)
        if watch is not None:
            for collection in sub.collections or ("",):
                await self.sio.leave_room(sid, watch.room(collection), namespace=namespace)
            watch.sids.discard(sid)
            if not watch.sids:
                del self.watches[key]
            else:  # poll only what the connections left still want
                wanted = {
                    c for s in self.subs.values() if s.sid in watch.sids for c in s.collections
                }
                watch.cursor = {c: at for c, at in watch.cursor.items() if c in wanted}

    async def close(self) -> None:
        self._closed = True
        await self.relay.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    # -- the poller --------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.watches and not self._closed:
            started = loop.time()
            try:
                await self.poll()
            except Exception:  # the store unreachable for a moment: try again next round
                log.exception("socket.io poll round failed")
            await asyncio.sleep(max(0.0, self.poll_seconds - (loop.time() - started)))

    async def poll(self) -> None:
        """One round: credentials due for a check, then each watch's changes emitted."""
        await self._recheck()
        for watch in list(self.watches.values()):
            if watch.key not in self.watches:
                continue
            try:
                if watch.namespace == STORAGE:
                    await self._storage(watch)
                else:
                    await self._alarm(watch)
            except TailormlError as error:  # access ended (consent withdrawn, erased)
                log.info("socket.io subscription of %s ended: %s", watch.reader.id, error)
                await self._end(watch)
            except Exception:
                log.exception("socket.io poll of %s failed", watch.subject.id)

    async def _recheck(self) -> None:
        now = time.monotonic()
        for sub in [s for s in self.subs.values() if now - s.checked >= REAUTH_SECONDS]:
            try:
                reader, subject = await run_in_threadpool(
                    self._authorize, sub.credentials, sub.patient
                )
                if (reader.id, subject.id) != (sub.reader.id, sub.subject.id):
                    raise TailormlError("the token names another account now")
                sub.checked = now
            except TailormlError:
                await self._unsubscribe(sub.namespace, sub.sid)
                await self.sio.disconnect(sub.sid, namespace=sub.namespace)

    async def _end(self, watch: Watch) -> None:
        for sid in list(watch.sids):
            await self._unsubscribe(watch.namespace, sid)
            await self.sio.disconnect(sid, namespace=watch.namespace)

    async def _storage(self, watch: Watch) -> None:
        service = self.service
        changed, moved = await run_in_threadpool(self._changed, watch)
        for collection, floor in moved.items():
            if watch.cursor.get(collection, floor) < floor:
                watch.cursor[collection] = floor
        for collection in changed:
            after = watch.cursor.get(collection)
            for _ in range(BATCHES if after is not None else 0):  # None: no longer wanted
                records = await run_in_threadpool(
                    service.v3_history, watch.reader, watch.patient, collection, after, False, BATCH
                )
                for record in records:
                    await self._emit_change(watch, collection, record)
                    after = max(after, record["srvModified"])
                watch.cursor[collection] = after
                if len(records) < BATCH:
                    break

    def _changed(self, watch: Watch) -> tuple[list[str], dict[str, int]]:
        """The watched collections with a change after what was sent, and how far the
        others' cursors may move; access is checked again (a withdrawn consent ends it).

        Each is one history query bounded below by its cursor. The collections stored whole
        share one index by server time, so a quiet collection's query (a profile changed
        months ago) would read every devicestatus since: a collection with nothing new moves
        its cursor up to the newest time already seen of any collection. That is safe
        because server times are taken in commit order (one clock, inside the writing
        transaction): a change not visible to this query commits with a later time than
        every one that was visible before it."""
        self.service.subject(watch.reader, watch.patient, "subscribe_socketio")
        store = self.service.store
        cursors = dict(watch.cursor)
        floor = max(cursors.values(), default=0)
        changed, moved = [], {}
        for collection, after in cursors.items():
            if store.v3_history(collection, watch.subject.id, after, False, 1):
                changed.append(collection)
            elif after < floor:
                moved[collection] = floor
        return changed, moved

    async def _emit_change(self, watch: Watch, collection: str, record: dict) -> None:
        if record.get("isValid") is False:
            event, data = "delete", {"colName": collection, "identifier": record["identifier"]}
        else:
            created = record.get("srvCreated") == record["srvModified"]
            event, data = (
                ("create" if created else "update"),
                {"colName": collection, "doc": record},
            )
        await self.sio.emit(event, data, room=watch.room(collection), namespace=STORAGE)

    def _newest_decision(self, subject: Person) -> dict | None:
        live = self.service.live
        found = live.history(subject.id, None, live.current_limit_ms(subject.id), 1)
        return found[0] if found else None

    def _fresh_decision(self, watch: Watch) -> tuple[dict | None, bool]:
        """The subject's newest decision (access checked again), and whether it is fresh."""
        self.service.subject(watch.reader, watch.patient, "read_alerts")
        current = self._newest_decision(watch.subject)
        if current is None:
            return None, False
        live = self.service.live
        stale_ms = live.policy_of(watch.subject.id).stale_minutes * MINUTE_MS
        return current, current["reading_ms"] >= live.now_ms() - stale_ms

    async def _alarm(self, watch: Watch) -> None:
        current, fresh = await run_in_threadpool(self._fresh_decision, watch)
        if current is None or current["id"] == watch.alert_id:
            return
        watch.alert_id = current["id"]
        decision = current["decision"]
        if decision in SOUNDING and fresh:
            level, event = SOUNDING[decision]
            await run_in_threadpool(self.service._read, watch.reader, "alerts", watch.subject.id, 1)
            await self.sio.emit(
                event, notification(current, level), room=watch.room(), namespace=ALARM
            )
            watch.sounding = True
        elif decision == "none" and watch.sounding:
            clear = {
                "clear": True,
                "title": "All Clear",
                "message": "tailorml: no alert predicted for the newest reading",
                "group": "default",
            }
            await self.sio.emit("clear_alarm", clear, room=watch.room(), namespace=ALARM)
            watch.sounding = False


def notification(decision: dict, level: int) -> dict:
    """A decision as Nightscout's notification (lib/notifications.js, as AndroidAPS'
    NSAlarmObject reads it: level, title, message, eventName, group)."""
    kind = decision.get("kind")
    low = decision["decision"] == "urgent" or kind == "hypo"
    what = "low" if low else "high"
    title = ("Urgent " if level == 2 else "") + (
        "low" if decision["decision"] == "urgent" else f"{what} predicted"
    )
    cgm = decision.get("cgm")
    shown = f"CGM {cgm:.0f} mg/dL. " if isinstance(cgm, int | float) else ""
    return {
        "level": level,
        "title": f"tailorml: {title}",
        "message": shown + str(decision.get("reason") or ""),
        "eventName": what,
        "plugin": {
            "name": "tailorml",
            "label": "tailorml alerts",
            "pluginType": "notification",
            "enabled": True,
        },
        "group": "default",
        "key": f"tailorml_{decision['id']}",
        "tailorml": {
            k: decision.get(k) for k in ("decision", "kind", "reading_ms", "cgm", "reason")
        },
    }


class SocketIOMount:
    """`/socket.io/` (HTTP long-polling and WebSocket) to the socket.io server, everything
    else to the app; its HTTP answers carry the API's no-store headers."""

    def __init__(self, app: ASGIApp, hub: SocketHub) -> None:
        self.app = app
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] not in ("http", "websocket") or not (path + "/").startswith(PATH):
            await self.app(scope, receive, send)
            return

        async def no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                for name, value in (
                    (b"cache-control", b"no-store"),
                    (b"x-content-type-options", b"nosniff"),
                ):
                    if name not in names:
                        headers.append((name, value))
                message = dict(message, headers=headers)
            await send(message)

        relay = self.hub.relay
        await relay.listen()
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        sid = (query.get("sid") or [""])[0]
        if not sid and len(self.hub.sio.eio.sockets) >= MAX_CONNECTIONS:
            # a new Engine.IO session: refused while this process holds its maximum
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": 1013})
                return
            await no_store({"type": "http.response.start", "status": 503, "headers": []})
            await no_store({"type": "http.response.body", "body": b""})
            return
        owner = relay.owner(sid)
        if owner is not None:
            if scope["type"] == "websocket":  # not relayed: the client stays on polling
                await receive()
                await send({"type": "websocket.close", "code": 1008})
                return
            if await relay.forward(owner, scope, receive, no_store):
                return
        await self.hub.sio.handle_request(scope, receive, no_store)


class Relay:
    """Engine.IO keeps a session in the process that opened it, and with `serve --workers
    N` a client's next long-poll may reach another process (uvicorn's workers share the
    port; AndroidAPS' client polls before it upgrades to a WebSocket, and sends while a
    poll is open, on a second connection). Each process that serves socket.io listens on
    a Unix socket of its own, in a directory private to this user and data directory
    (workers share a host), and a request naming another process's session (the session id
    starts with that process's tag) is relayed there as one request and its answer. A
    WebSocket upgrade reaching another process is refused: the client keeps long-polling,
    relayed. An owner that is gone (restarted) answers nothing: the request is answered
    here, "unknown session", and the client connects again."""

    def __init__(self, data_dir: Callable[[], Path], sio: socketio.AsyncServer) -> None:
        self.sio = sio
        self.tag = secrets.token_hex(4)
        self.data_dir = data_dir  # read when the first socket.io request comes
        self._server: asyncio.AbstractServer | None = None
        self._starting: asyncio.Future | None = None
        self.usable = True

    @functools.cached_property
    def directory(self) -> Path:
        key = hashlib.sha256(str(Path(self.data_dir()).resolve()).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"tailorml-socketio-{os.getuid()}-{key}"

    def path(self, tag: str) -> Path:
        return self.directory / f"{tag}.sock"

    def owner(self, sid: str) -> str | None:
        """The tag of the process holding session `sid` when it is another one."""
        tag, dot, _ = sid.partition(".")
        if not dot or tag == self.tag or len(tag) != 8 or not self.usable:
            return None
        return tag if all(c in "0123456789abcdef" for c in tag) else None

    async def listen(self) -> None:
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._listen())
        await self._starting

    async def _listen(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, exist_ok=True)
            found = os.lstat(self.directory)
            if (
                not stat.S_ISDIR(found.st_mode)
                or found.st_uid != os.getuid()
                or found.st_mode & 0o077
            ):
                raise OSError(f"{self.directory} is not a private directory of this user")
            self._server = await asyncio.start_unix_server(
                self._answer, path=str(self.path(self.tag))
            )
        except OSError as error:
            self.usable = False
            log.warning("socket.io sessions are not relayed between processes: %s", error)
            return
        for stale in sorted(self.directory.glob("*.sock"))[:64]:  # of processes that died
            if stale.name != f"{self.tag}.sock":
                try:
                    _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(stale)), 1)
                    writer.close()
                except ConnectionRefusedError:  # nobody listens there any more
                    with contextlib.suppress(OSError):
                        stale.unlink()
                except (OSError, TimeoutError):
                    pass

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(OSError):
                self.path(self.tag).unlink()

    async def forward(self, tag: str, scope: Scope, receive: Receive, send: Send) -> bool:
        """Relay one HTTP request to the process `tag`; False when it cannot be reached."""
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return True  # the client is gone
            body += message.get("body", b"")
            if len(body) > MAX_MESSAGE_BYTES:
                await send({"type": "http.response.start", "status": 413, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return True
            if not message.get("more_body"):
                break
        head = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "length": len(body),
        }
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.path(tag))), 5
            )
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(json.dumps(head).encode() + b"\n" + body)
            await writer.drain()
            answer = json.loads(await asyncio.wait_for(reader.readline(), RELAY_SECONDS))
            payload = await asyncio.wait_for(reader.readexactly(answer["length"]), 10)
        except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            return False
        finally:
            writer.close()
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer["headers"]]
        await send({"type": "http.response.start", "status": answer["status"], "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return True

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One relayed request, answered by this process's socket.io server."""
        try:
            head = json.loads(await asyncio.wait_for(reader.readline(), 10))
            if not 0 <= head["length"] <= MAX_MESSAGE_BYTES:
                return
            body = await asyncio.wait_for(reader.readexactly(head["length"]), 10)
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": head["method"],
                "scheme": "http",
                "path": head["path"],
                "raw_path": head["path"].encode("latin-1"),
                "root_path": "",
                "query_string": head["query"].encode("latin-1"),
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head["headers"]],
                "client": None,
                "server": None,
            }
            given = asyncio.Event()
            out: dict[str, Any] = {"status": 500, "headers": [], "body": b""}

            async def receive() -> Message:
                if not given.is_set():
                    given.set()
                    return {"type": "http.request", "body": body, "more_body": False}
                await asyncio.Event().wait()  # nothing more comes
                return {"type": "http.disconnect"}

            async def send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    out["status"] = message["status"]
                    out["headers"] = [
                        [k.decode("latin-1"), v.decode("latin-1")]
                        for k, v in message.get("headers", [])
                    ]
                elif message["type"] == "http.response.body":
                    out["body"] += message.get("body", b"")

            await self.sio.handle_request(scope, receive, send)
            shown = {"status": out["status"], "headers": out["headers"], "length": len(out["body"])}
            writer.write(json.dumps(shown).encode() + b"\n" + out["body"])
            await writer.drain()
        except (
            OSError,
            TimeoutError,
            ValueError,
            KeyError,
            TypeError,
            asyncio.IncompleteReadError,
        ):
            log.info("a relayed socket.io request failed", exc_info=True)
        finally:
            writer.close()
