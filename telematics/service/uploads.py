"""The write paths behind the routes: trip batches, OBD feeds and GPX files, idempotently."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree

import numpy as np
import orjson
import psycopg
from starlette.responses import Response

from telematics.ingest import (
    GPS_SPEC,
    IMU_SPEC,
    OBD_SPEC,
    CleanStream,
    WireError,
    check_sample_count,
    parse_json,
    parse_stream,
    require_str,
)
from telematics.obd_scoring import score_obd_feed
from telematics.provisional import mark_due
from telematics.service.auth import Principal
from telematics.service.problems import Problem
from telematics.service.settings import Settings
from telematics.store import access
from telematics.store import privacy as privacy_sql
from telematics.store import trips as trip_sql
from telematics.store.pgcopy import TextCodes
from telematics.store.repository import GPS, IMU, OBD, SampleTable, Store

Work = Callable[[psycopg.Connection[Any]], tuple[int, dict[str, Any]]]


def check_idempotency_key(value: str | None) -> str:
    if value is None:
        raise Problem(400, "idempotency_key_missing", "the Idempotency-Key header is required "
                      "on every write", "Idempotency-Key")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Problem(400, "idempotency_key_malformed", "Idempotency-Key must be a UUID",
                      "Idempotency-Key") from None


def request_fingerprint(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).digest()


def run_idempotent(store: Store, settings: Settings, device_id: str, key: str,
                   fingerprint: bytes, work: Work) -> Response:
    """Execute `work` once per (device, key): the record and the work commit together.

    A concurrent request with the same key gets 409 while the first holds the key's lock;
    a later retry gets the stored status and the identical body.
    """
    with store.connection() as conn:
        with conn.transaction():
            locked, stored = access.lock_and_find_idempotency_record(conn, device_id, key)
            if not locked:
                raise Problem(409, "idempotency_in_progress",
                              "a request with this Idempotency-Key is still running",
                              "Idempotency-Key", headers={"Retry-After": "1"})
            if stored is not None:
                if stored.request_sha256 != fingerprint:
                    raise Problem(422, "idempotency_key_reused",
                                  "this Idempotency-Key was used with a different request",
                                  "Idempotency-Key")
                return Response(stored.body, status_code=stored.status,
                                media_type="application/json",
                                headers={"Idempotent-Replayed": "true"})
            status, body = work(conn)
            payload = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
            access.save_idempotency_record(conn, device_id, key, fingerprint, status, payload,
                                           settings.idempotency_ttl_s)
    return Response(payload, status_code=status, media_type="application/json")


def _now_us() -> int:
    return time.time_ns() // 1_000


def _stream_summary(stream: CleanStream | None, stored: int) -> dict[str, int]:
    if stream is None:
        return {"received": 0, "accepted": 0, "stored": 0, "already_stored": 0,
                "duplicates_in_batch": 0, "rejected": 0}
    return {"received": stream.received, "accepted": stream.accepted, "stored": stored,
            "already_stored": stream.accepted - stored,
            "duplicates_in_batch": stream.duplicates_in_batch, "rejected": len(stream.rejected)}


def _columns(device_id: str, trip_id: str, stream: CleanStream) -> dict[str, Any]:
    n = stream.accepted
    # The batch is one trip of one device: its key columns are one text each.
    one = np.zeros(n, dtype=np.int64)
    cols: dict[str, Any] = {
        "time": stream.t_us, "device_id": TextCodes(one, (device_id,)),
        "trip_id": TextCodes(one, (trip_id,)), "seq": stream.seq,
    }
    for name, values in stream.values.items():
        # The stream holds no infinity (refused while parsing): NaN is what is missing.
        cols[name] = (values if values.dtype == np.bool_
                      else np.ma.MaskedArray(values, mask=np.isnan(values)))
    return cols


def _store_stream(store: Store, conn: psycopg.Connection[Any], table: SampleTable,
                  columns: dict[str, Any]) -> int:
    return store.insert_samples(table, columns, conn=conn) if len(columns["time"]) else 0


STREAM_CATEGORY = {"gps": "location", "imu": "motion", "obd": "obd"}


def require_consent(granted: set[str], streams: dict[str, CleanStream | None]) -> None:
    """Refuse a stream whose data category the policyholder has not consented to (for any
    purpose: ``granted``, as ``privacy_sql.granted_categories`` gives it)."""
    for name, stream in streams.items():
        if stream is not None and stream.received and STREAM_CATEGORY[name] not in granted:
            category = STREAM_CATEGORY[name]
            raise Problem(403, "consent_missing", f"no consent to collect '{category}' data; "
                          "the policyholder can grant it in the app", name, category=category)


def parse_trip_batch(body: bytes, path_trip_id: str, who: Principal, settings: Settings
                     ) -> tuple[int, bool, CleanStream | None, CleanStream | None]:
    doc = parse_json(body)
    unknown = sorted(set(doc) - {"device_id", "trip_id", "batch_no", "final", "gps", "imu"})
    if unknown:
        raise WireError("unknown_field", unknown[0], "is not a field of a trip batch")
    device_id = require_str(doc, "device_id")
    if device_id != who.device_id:
        raise Problem(403, "device_mismatch", "device_id is not the device of this API key",
                      "device_id")
    if "trip_id" in doc and doc["trip_id"] != path_trip_id:
        raise WireError("trip_mismatch", "trip_id", "differs from the trip in the URL")
    batch_no = doc.get("batch_no", 0)
    if not isinstance(batch_no, int) or isinstance(batch_no, bool) or batch_no < 0:
        raise WireError("bad_type", "batch_no", "must be a non-negative integer")
    final = doc.get("final", False)
    if not isinstance(final, bool):
        raise WireError("bad_type", "final", "must be true or false")
    check_sample_count({"gps": doc.get("gps"), "imu": doc.get("imu")},
                       settings.max_samples_per_batch)
    now_us = _now_us()
    oldest_us = now_us - settings.retention_days * 86_400 * 1_000_000
    gps = (parse_stream(doc["gps"], GPS_SPEC, "gps", now_us=now_us, oldest_us=oldest_us)
           if doc.get("gps") is not None else None)
    imu = (parse_stream(doc["imu"], IMU_SPEC, "imu", now_us=now_us, oldest_us=oldest_us)
           if doc.get("imu") is not None else None)
    return batch_no, final, gps, imu


def trip_batch_work(store: Store, settings: Settings, who: Principal, trip_id: str,
                    batch_no: int, final: bool, gps: CleanStream | None,
                    imu: CleanStream | None, source: str = "phone") -> Work:
    from telematics.scoring import score_trip

    assert who.device_id is not None and who.policy_id is not None
    device_id, policy_id = who.device_id, who.policy_id

    def work(conn: psycopg.Connection[Any]) -> tuple[int, dict[str, Any]]:
        existing, granted = trip_sql.lock_trip_with_consents(conn, device_id, trip_id,
                                                             policy_id)
        if existing is not None and existing.policy_id != policy_id:
            raise Problem(409, "trip_conflict", "this trip id belongs to another policy",
                          "trip_id")
        require_consent(granted, {"gps": gps, "imu": imu})
        stored_gps = _store_stream(store, conn, GPS, _columns(device_id, trip_id, gps)) if gps else 0
        stored_imu = _store_stream(store, conn, IMU, _columns(device_id, trip_id, imu)) if imu else 0
        times = [s.t_us for s in (gps, imu) if s is not None and s.accepted]
        first_us = int(min(t[0] for t in times)) if times else None
        last_us = int(max(t[-1] for t in times)) if times else None
        trip = trip_sql.record_upload(conn, device_id=device_id, trip_id=trip_id,
                                      policy_id=policy_id, source=source, first_us=first_us,
                                      last_us=last_us, n_gps=stored_gps, n_imu=stored_imu)
        result: dict[str, Any] = {
            "trip_id": trip_id, "batch_no": batch_no,
            "gps": _stream_summary(gps, stored_gps), "imu": _stream_summary(imu, stored_imu),
            "rejected": [r.as_dict() for s in (gps, imu) if s is not None for r in s.rejected],
        }
        if final or trip.status == "closed":
            result["trip"] = score_trip(conn, device_id, trip_id, trip=trip)
            mark_due(conn, policy_id)
        else:
            result["trip"] = {"status": trip.status}
        return 200, result

    return work


def close_work(who: Principal, trip_id: str) -> Work:
    from telematics.scoring import score_trip

    assert who.device_id is not None

    def work(conn: psycopg.Connection[Any]) -> tuple[int, dict[str, Any]]:
        trip = trip_sql.get_trip(conn, who.device_id or "", trip_id, for_update=True)
        if trip is None:
            raise Problem(404, "not_found", f"no trip '{trip_id}' for this device", "trip_id")
        scored = score_trip(conn, trip.device_id, trip_id)
        mark_due(conn, trip.policy_id)
        return 200, {"trip_id": trip_id, "trip": scored}

    return work


def parse_obd_feed(body: bytes, who: Principal, settings: Settings) -> tuple[str, CleanStream]:
    doc = parse_json(body)
    unknown = sorted(set(doc) - {"device_id", "feed_id", "obd"})
    if unknown:
        raise WireError("unknown_field", unknown[0], "is not a field of an OBD feed")
    if require_str(doc, "device_id") != who.device_id:
        raise Problem(403, "device_mismatch", "device_id is not the device of this API key",
                      "device_id")
    feed_id = require_str(doc, "feed_id")
    if "obd" not in doc:
        raise WireError("missing_field", "obd", "is required")
    check_sample_count({"obd": doc["obd"]}, settings.max_samples_per_batch)
    now_us = _now_us()
    oldest_us = now_us - settings.retention_days * 86_400 * 1_000_000
    return feed_id, parse_stream(doc["obd"], OBD_SPEC, "obd", now_us=now_us, oldest_us=oldest_us)


def obd_feed_work(store: Store, who: Principal, feed_id: str, obd: CleanStream) -> Work:
    assert who.device_id is not None and who.policy_id is not None
    device_id, policy_id = who.device_id, who.policy_id

    def work(conn: psycopg.Connection[Any]) -> tuple[int, dict[str, Any]]:
        require_consent(privacy_sql.granted_categories(conn, policy_id), {"obd": obd})
        cols = _columns(device_id, feed_id, obd)
        values = obd.values
        if "speed_kmh" in values:
            cols["speed_mps"] = np.ma.masked_invalid(values["speed_kmh"] / 3.6)
            del cols["speed_kmh"]
        if "odometer_km" in values:
            cols["odometer_m"] = np.ma.masked_invalid(values["odometer_km"] * 1000.0)
            del cols["odometer_km"]
        stored = _store_stream(store, conn, OBD, cols)
        first = int(obd.t_us[0]) if obd.accepted else None
        last = int(obd.t_us[-1]) if obd.accepted else None
        trip_sql.record_upload(conn, device_id=device_id, trip_id=feed_id, policy_id=policy_id,
                               source="obd_feed", first_us=first, last_us=last, n_gps=0,
                               n_imu=0)
        trips = score_obd_feed(conn, device_id, feed_id, policy_id,
                               trip_sql.policy_time_zone(conn, policy_id))
        if any(t["status"] != "open" for t in trips):
            mark_due(conn, policy_id)
        return 200, {"feed_id": feed_id, "obd": _stream_summary(obd, stored), "trips": trips,
                     "rejected": [r.as_dict() for r in obd.rejected]}

    return work


GPX_NS = {"gpx": "http://www.topografix.com/GPX/1/1"}


def parse_gpx(body: bytes, settings: Settings) -> CleanStream:
    """Track points of a GPX 1.1 (or 1.0) file as a GPS stream; every point needs a time."""
    if b"<!DOCTYPE" in body[:2048].upper() or b"<!ENTITY" in body.upper():
        raise WireError("bad_gpx", "body", "GPX with a DOCTYPE or entities is not accepted", 400)
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise WireError("bad_gpx", "body", f"is not well-formed XML ({exc})", 400) from None
    ns = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
    if not root.tag.endswith("gpx"):
        raise WireError("bad_gpx", "body", "the root element is not <gpx>", 400)
    q = (lambda t: f"{{{ns}}}{t}") if ns else (lambda t: t)
    lat, lon, t_us, ele = [], [], [], []
    for i, pt in enumerate(root.iter(q("trkpt"))):
        try:
            lat.append(float(pt.attrib["lat"]))
            lon.append(float(pt.attrib["lon"]))
        except (KeyError, ValueError):
            raise WireError("bad_gpx", f"trkpt[{i}]", "needs numeric lat and lon", 422) from None
        when = pt.findtext(q("time"))
        if when is None:
            raise WireError("bad_gpx", f"trkpt[{i}].time", "every track point needs a time")
        try:
            stamp = datetime.fromisoformat(when.strip().replace("Z", "+00:00"))
        except ValueError:
            raise WireError("bad_gpx", f"trkpt[{i}].time", f"'{when}' is not ISO 8601") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        t_us.append(int(stamp.timestamp() * 1_000_000))
        e = pt.findtext(q("ele"))
        ele.append(float(e) if e is not None else None)
    if not lat:
        raise WireError("bad_gpx", "body", "has no track points")
    now_us = _now_us()
    doc = {"seq": list(range(len(lat))), "t_us": t_us, "lat_deg": lat, "lon_deg": lon,
           "altitude_m": ele}
    check_sample_count({"gpx": doc}, settings.max_samples_per_batch)
    return parse_stream(doc, GPS_SPEC, "gpx", now_us=now_us,
                        oldest_us=now_us - settings.retention_days * 86_400 * 1_000_000)


def write_gpx(trip_id: str, t_us: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray) -> bytes:
    """A GPX 1.1 track of the given points (for exports and round-trip tests)."""
    root = ElementTree.Element("gpx", {"version": "1.1", "creator": "ubi",
                                       "xmlns": GPX_NS["gpx"]})
    trk = ElementTree.SubElement(root, "trk")
    ElementTree.SubElement(trk, "name").text = trip_id
    seg = ElementTree.SubElement(trk, "trkseg")
    for t, la, lo in zip(t_us, lat_deg, lon_deg, strict=True):
        pt = ElementTree.SubElement(seg, "trkpt", {"lat": repr(float(la)), "lon": repr(float(lo))})
        stamp = datetime.fromtimestamp(int(t) / 1e6, tz=UTC)
        ElementTree.SubElement(pt, "time").text = stamp.isoformat().replace("+00:00", "Z")
    return ElementTree.tostring(root, xml_declaration=True, encoding="utf-8")
