"""The database going away mid-upload, and per-device rate limits."""

from __future__ import annotations

import socket
import threading
import uuid

import httpx
import psycopg
import pytest

from telematics.service.settings import Settings
from tests.service.conftest import ServerThread, Tokens, idem, register
from tests.service.payloads import batches, drive

pytestmark = pytest.mark.db


class CuttableProxy:
    """A TCP proxy to the database that the test can cut and restore, like a DB restart."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.conns.clear()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_database_down_gives_503_then_retries_succeed(db_url: str, tokens: Tokens) -> None:
    info = psycopg.conninfo.conninfo_to_dict(db_url)
    proxy = CuttableProxy(str(info.get("host", "127.0.0.1")), int(info.get("port", 5432)))
    url = psycopg.conninfo.make_conninfo(db_url, host="127.0.0.1", port=str(proxy.port))
    settings = Settings(database_url=url, pool_timeout_s=2.0, rate_per_s=1000, rate_burst=1000)
    trip = drive(600)
    try:
        with ServerThread(settings) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
            dev = register(c, tokens)
            bodies = batches(dev.device_id, "trip-down", trip, 6, final=False)
            keys = [str(uuid.uuid4()) for _ in bodies]
            for body, key in zip(bodies[:2], keys[:2], strict=True):
                r = c.post("/v1/trips/trip-down/batches", json=body,
                           headers={**dev.headers, "Idempotency-Key": key})
                assert r.status_code == 200, r.text
            proxy.cut()
            failed = []
            for body, key in zip(bodies[2:], keys[2:], strict=True):
                r = c.post("/v1/trips/trip-down/batches", json=body,
                           headers={**dev.headers, "Idempotency-Key": key})
                assert r.status_code == 503, r.text
                assert r.json()["code"] == "database_unavailable"
                assert int(r.headers["Retry-After"]) > 0
                failed.append((body, key))
            proxy.restore()
            # Every batch is retried with its own key, the first two as lost acknowledgements.
            for body, key in list(zip(bodies[:2], keys[:2], strict=True)) + failed:
                r = c.post("/v1/trips/trip-down/batches", json=body,
                           headers={**dev.headers, "Idempotency-Key": key})
                assert r.status_code == 200, r.text
    finally:
        proxy.close()
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT seq) FROM gps_samples"
                           " WHERE device_id = %s", (dev.device_id,)).fetchone()
    assert row == (600, 600)


def test_rate_limit_answers_429_with_retry_after(db_url: str, tokens: Tokens) -> None:
    # The burst covers the eight consent writes of `register` and three uploads.
    settings = Settings(database_url=db_url, rate_per_s=0.2, rate_burst=11)
    with ServerThread(settings) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        dev = register(c, tokens)
        body = batches(dev.device_id, "t", drive(10), 1, final=False)[0]
        codes = [c.post("/v1/trips/t/batches", json=body, headers={**dev.headers, **idem()})
                 for _ in range(6)]
    assert [r.status_code for r in codes[:3]] == [200, 200, 200]
    limited = [r for r in codes if r.status_code == 429]
    assert limited
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert limited[0].json()["code"] == "rate_limited"
