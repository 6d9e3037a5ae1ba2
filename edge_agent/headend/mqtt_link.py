"""The head-end link over MQTT (paho-mqtt 2.x): store and forward out, commands in.

Everything outgoing is first committed to the outbox; this thread publishes the outbox in `seq`
order at QoS 1, with a bounded window of messages in flight, and deletes a row only once the
broker acknowledged it (PUBACK).  After an outage the backlog drains in order while new rows
keep arriving behind it.  The retained status message is current state, not history: it is
published at once on every connect and periodically, and its `seq` is the high-water mark of the
sequence (the last seq queued), not a number of its own, so the data topics stay gapless
(docs/mqtt.md).  The last will replaces it with `{"online": false}`.

Connections use a persistent session (MQTT 3.1.1 clean_session=false, MQTT 5 clean_start=false
with a session expiry) so commands sent while the gateway was away arrive; broker URLs are tried
in turn with jittered exponential backoff.  Incoming commands are queued for the command
handler: nothing slow runs on this thread.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import queue
import random
import ssl
import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse


class _Deferred(types.ModuleType):
    """Stands in `sys.modules` for a module nobody has used yet; the first attribute asked
    of it imports the real module (which then replaces it) and answers from that.

    paho imports `urllib.request` at the top but only uses it to look for a proxy when
    PySocks is installed; with it come `http.client`, `tempfile` and the `email` package,
    ~2.4 MB of a gateway's memory for nothing.  (The standard LazyLoader does not help
    here: the import statement itself reads the module's `__spec__`, which loads it.)"""

    _lock = threading.Lock()

    def __getattr__(self, attr: str) -> Any:  # only for what the stand-in does not have
        with self._lock:
            module = sys.modules.get(self.__name__)
            if module is self:
                del sys.modules[self.__name__]
                module = importlib.import_module(self.__name__)
        return getattr(module, attr)


def _defer_import(name: str) -> None:
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None:
        return
    stand_in = _Deferred(name)
    stand_in.__spec__ = spec
    sys.modules[name] = stand_in
    parent, _, child = name.rpartition(".")
    setattr(sys.modules[parent], child, stand_in)


_defer_import("urllib.request")

import paho.mqtt.client as mqtt  # noqa: E402  (after the lazy urllib.request)
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from edge_agent.config import MqttConfig, RetentionConfig  # noqa: E402
from edge_agent.headend.messages import VERSION, on_the_wire, render  # noqa: E402
from edge_agent.store import Store  # noqa: E402

log = logging.getLogger(__name__)

TOPICS = {"telemetry": "telemetry", "events": "events", "ledger": "ledger",
          "cmd_result": "cmd/result", "status": "status",
          "lineloss": "lineloss", "usage": "usage"}  # the concentrator's (docs/concentrator.md)
WINDOW = 200  # messages in flight before waiting for PUBACKs
SESSION_EXPIRY = 7 * 24 * 3600  # MQTT 5: keep our session (and queued commands) a week


def _release_memory() -> None:
    """After an oversized command: hand the heap paho grew for it back to the system (glibc
    keeps freed memory otherwise: 3 messages of 10 MB left the daemon 38 MB larger)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass  # not glibc: nothing to do


class HeadEndLink:
    def __init__(self, config: MqttConfig, gateway: str, store: Store,
                 status: Callable[[], dict[str, Any]], retention: RetentionConfig,
                 commands: queue.Queue[bytes] | None = None) -> None:
        self.config = config
        self.gateway = gateway
        self.store = store
        self.status = status
        self.retention = retention
        self.commands: queue.Queue[bytes] = commands or queue.Queue()
        self.base = f"{config.prefix}/{gateway}"
        self.connected = threading.Event()
        self.url = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self._client: mqtt.Client | None = None
        self._inflight: dict[int, int] = {}  # mid -> outbox seq
        self._acked: list[int] = []
        self._lock = threading.Lock()
        self._cursor = 0
        self._generation = 0  # connections made: an ack belongs to the one that delivered
        self._to_ack: list[tuple[int, int, int]] = []  # (generation, mid, qos)
        self._oversized = False
        # The heap is trimmed again a second after an oversized command: under load the
        # first trim sometimes left 10-21 MB that was freed only after it (5 runs in 40 of
        # tests/system/test_command_limits.py; 0 in 24 with the second trim).
        self._trim_again = 0.0
        self._last_trim = float("-inf")

    def topic(self, kind: str) -> str:
        return f"{self.base}/{TOPICS[kind]}"

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Say goodbye (retained offline status), flush acknowledgements, disconnect."""
        self._stop.set()
        self._thread.join(timeout)

    # -- connection -----------------------------------------------------------------------
    def _new_client(self, url: str) -> mqtt.Client:
        v5 = self.config.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"edge-agent-{self.gateway}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
        )
        client.max_inflight_messages_set(WINDOW)
        client.max_queued_messages_set(0)
        client.manual_ack_set(True)  # a command is acknowledged once its answer is stored
        if self.config.username:
            client.username_pw_set(self.config.username, self.config.password)
        if urlparse(url).scheme == "mqtts":
            client.tls_set(ca_certs=self.config.ca_file, certfile=self.config.cert_file,
                           keyfile=self.config.key_file, cert_reqs=ssl.CERT_REQUIRED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def _connect(self, url: str) -> mqtt.Client:
        if self._client is None or url != self.url:
            self._client = self._new_client(url)
            self.url = url
            with self._lock:
                self._inflight.clear()
            self._cursor = 0  # a new client re-sends everything not yet acknowledged
        client = self._client
        will = {"v": VERSION, "gw": self.gateway, "seq": self.store.high_water_seq(),
                "online": False}
        client.will_set(self.topic("status"), json.dumps(will), qos=1, retain=True)
        parsed = urlparse(url)
        port = parsed.port or (8883 if parsed.scheme == "mqtts" else 1883)
        if self.config.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY
            client.connect(parsed.hostname or "localhost", port, self.config.keepalive,
                           clean_start=False, properties=props)
        else:
            client.connect(parsed.hostname or "localhost", port, self.config.keepalive)
        return client

    def _trim(self) -> None:
        """Retention, every minute, connected or not (an outage is when the backlog grows)."""
        now = time.monotonic()
        if now - self._last_trim < 60:
            return
        self._last_trim = now
        dropped = self.store.trim_outbox(self.retention.outbox_max_messages,
                                         self.retention.outbox_max_age_days)
        if dropped:
            log.warning("outbox retention: dropped %d oldest messages", dropped)

    def _run(self) -> None:
        failures = 0
        index = 0
        last_status = 0.0
        while not self._stop.is_set():
            if self._client is None or not self.connected.is_set():
                url = self.config.urls[index % len(self.config.urls)]
                try:
                    client = self._connect(url)
                    deadline = time.monotonic() + 10
                    while not self.connected.is_set() and time.monotonic() < deadline:
                        client.loop(timeout=0.05)
                        if self._stop.is_set():
                            break
                    if not self.connected.is_set():
                        raise ConnectionError("no CONNACK")
                    failures = 0
                    last_status = 0.0
                except (OSError, ConnectionError, ssl.SSLError, ValueError) as exc:
                    failures += 1
                    index += 1
                    delay = min(self.config.reconnect_max,
                                self.config.reconnect_min * 2 ** min(failures - 1, 16))
                    delay *= random.uniform(0.5, 1.0)  # jitter: a fleet must not stampede
                    self.store.set_setting("broker_state", f"unreachable ({url}: {exc}); retrying")
                    log.warning("broker %s: %s; retry in %.1f s", url, exc, delay)
                    self._trim()
                    self._stop.wait(delay)
                    continue
            assert self._client is not None
            self._client.loop(timeout=0.02)
            if not self.connected.is_set():
                continue
            now = time.monotonic()
            if now - last_status >= self.config.status_interval:
                last_status = now
                self.publish_status(True)
            self._send_acks()
            if self._oversized:
                self._oversized = False
                _release_memory()
                self._trim_again = now + 1.0
            elif self._trim_again and now >= self._trim_again:
                self._trim_again = 0.0
                _release_memory()
            self._pump()
            self._flush_acks()
            self._trim()
        self._goodbye()

    def _goodbye(self) -> None:
        client = self._client
        if client is not None and self.connected.is_set():
            self.publish_status(False)
            deadline = time.monotonic() + 2
            while self._inflight and time.monotonic() < deadline:
                client.loop(timeout=0.05)
            self._flush_acks()
            self.connected.clear()  # a disconnect we asked for is not worth a warning
            client.disconnect()
            client.loop(timeout=0.1)
        self.store.set_setting("broker_state", "stopped")

    # -- callbacks (paho's thread is this thread: we call loop() ourselves) ----------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            self.store.set_setting("broker_state", f"refused: {reason}")
            client.disconnect()
            return
        client.subscribe(self.topic("status").rsplit("/", 1)[0] + "/cmd", qos=1)
        with self._lock:
            self._generation += 1
            self._to_ack.clear()  # deliveries of an earlier connection are redelivered
        self.connected.set()
        self.store.set_setting("broker_state", f"connected to {self.url}")
        log.info("connected to %s (session present: %s)", self.url,
                 getattr(flags, "session_present", None))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        if self.connected.is_set():
            log.warning("disconnected from %s: %s", self.url, reason)
        self.connected.clear()
        self.store.set_setting("broker_state", f"disconnected from {self.url}: {reason}")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        with self._lock:
            seq = self._inflight.pop(mid, None)
        if seq is not None:
            self._acked.append(seq)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Queue the command with a way to acknowledge it once the handler stored its answer
        (manual ack: a crash before that makes the broker deliver it again).  An oversized
        payload is cut at once: it is refused by size anyway, and must not stay in memory."""
        payload = bytes(message.payload[:self.config.max_payload + 1])
        if len(message.payload) > self.config.max_payload:
            self._oversized = True  # give the memory paho read it into back (below)
        with self._lock:
            generation = self._generation
        mid, qos = message.mid, message.qos

        def ack() -> None:
            with self._lock:
                self._to_ack.append((generation, mid, qos))

        self.commands.put((payload, ack))

    def _send_acks(self) -> None:
        """PUBACK the commands whose answers are stored (on this thread: paho's loop)."""
        with self._lock:
            pending, self._to_ack = self._to_ack, []
            generation = self._generation
        for gen, mid, qos in pending:
            if gen == generation and qos > 0 and self._client is not None:
                self._client.ack(mid, qos)

    # -- publishing -----------------------------------------------------------------------
    def publish_status(self, online: bool) -> None:
        body: dict[str, Any] = {"v": VERSION, "gw": self.gateway,
                                "seq": self.store.high_water_seq(), "online": online}
        if online:
            body.update({k: v for k, v in on_the_wire(self.status()).items()
                         if k not in ("v", "gw", "seq")})
        if self._client is not None:
            self._client.publish(self.topic("status"), json.dumps(body, default=str), qos=1,
                                 retain=True)

    def _pump(self) -> None:
        """Publish outbox rows in seq order while the window has room."""
        assert self._client is not None
        while len(self._inflight) < WINDOW:
            rows = self.store.pending(limit=min(self.config.batch_size, WINDOW), after=self._cursor)
            if not rows:
                return
            for seq, kind, payload in rows:
                self._cursor = seq
                body = render(self.store, kind, payload)
                if body is None:  # the rows it pointed at were removed by retention
                    self._acked.append(seq)
                    continue
                body = {"v": VERSION, "gw": self.gateway, "seq": seq, **body}
                info = self._client.publish(self.topic(kind), json.dumps(body, default=str),
                                            qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    self._cursor = seq - 1  # try again from here after reconnecting
                    return
                with self._lock:
                    self._inflight[info.mid] = seq
                if len(self._inflight) >= WINDOW:
                    return

    def _flush_acks(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            self.store.acknowledge(acked)
