"""The console's view of the incident topic: hostile records are counted and left out (never fatal, never shown
half-parsed), tombstones forget, memory stays bounded with open incidents kept first; and its token parsing."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from incidents.alert_input import alert_from_doc
from incidents.book import IncidentBook
from incidents.console.auth import presented_token
from incidents.console.view import IncidentView
from tests.unit.test_triage import T0, doc


def records(n: int) -> list[dict]:
    """n incidents of distinct signatures, as the service writes them."""
    book = IncidentBook(gap_ms=300_000)
    out = []
    for i in range(n):
        d = doc(i, T0 + i, severity=1.0 + i % 40) | {"categories": {"protocol_type": "tcp", "service": f"s{i}",
                                                                      "flag": "SF"}}
        out += [inc.to_dict() for inc in book.add(alert_from_doc(d, T0 + i)).changed]
    return out


def test_records_tombstones_and_hostile_values() -> None:
    view = IncidentView(max_incidents=100)
    good = records(3)
    for r in good:
        view.apply(r["incident_id"].encode(), json.dumps(r).encode())
    assert len(view) == 3 and view.unreadable == 0
    hostile = [b"null", b"[]", b"1", b"{", b"\xff\xfe", json.dumps(good[0] | {"priority": "high"}).encode(),
               json.dumps(good[0] | {"alerts": 1e400}).encode().replace(b"Infinity", b"1e400"),
               json.dumps(good[0] | {"status": "pwned"}).encode(), json.dumps({"schema": good[0]["schema"]}).encode(),
               b"[" * 100_000]
    for value in hostile:
        view.apply(b"x", value)
    assert view.unreadable == len(hostile) and len(view) == 3
    assert view.get(good[0]["incident_id"]).priority == good[0]["priority"]  # not overwritten by a forgery
    view.apply(good[1]["incident_id"].encode(), None)
    assert view.get(good[1]["incident_id"]) is None and len(view) == 2
    ranked = view.ranked(include_closed=True)
    assert [i.priority for i in ranked] == sorted((i.priority for i in ranked), reverse=True)


def test_memory_is_bounded_and_open_incidents_are_kept_first() -> None:
    view = IncidentView(max_incidents=100)
    docs = records(400)
    closed = [r | {"status": "closed", "incident_id": f"closed-{i}"} for i, r in enumerate(docs[:300])]
    for r in [*docs[300:], *closed]:
        view.apply(r["incident_id"].encode(), json.dumps(r).encode())
    assert len(view) <= 110
    assert all(view.get(r["incident_id"]) is not None for r in docs[300:])  # the 100 open ones survive


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000) | st.recursive(st.none() | st.booleans() | st.floats() | st.text(max_size=20),
                                               lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=10),
                                                                                                   c, max_size=5)
                                               ).map(lambda v: json.dumps(v).encode()))
def test_any_bytes_on_the_incident_topic_never_raise(value: bytes) -> None:
    view = IncidentView(max_incidents=100)
    view.apply(b"k", value)
    assert len(view) + view.unreadable == 1


def test_tokens_from_basic_and_bearer_headers() -> None:
    basic = "Basic " + base64.b64encode(b"anyone:s3cr:et").decode()
    assert presented_token(basic) == "s3cr:et"
    assert presented_token("Bearer abc ") == "abc"
    assert presented_token("Basic !!!not-base64") is None
    assert presented_token("Basic " + base64.b64encode(b"\xff\xfe").decode()) is None
    assert presented_token("Digest x") is None and presented_token("") is None


# ------------------------------------------------------------------------------------------ the app, over ASGI
def call(app: object, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, dict, str]:
    """One request straight into the ASGI app (no server, no HTTP client library)."""
    import asyncio

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
             "raw_path": path.encode(), "query_string": b"", "scheme": "http", "root_path": "",
             "server": ("127.0.0.1", 8090), "client": ("127.0.0.1", 5000),
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()]}
    sent: list[dict] = []
    inbox = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[operator]
    start = next(m for m in sent if m["type"] == "http.response.start")
    text = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, text


def console_app(**settings: object) -> tuple[object, IncidentView]:
    from incidents.console.app import create_app
    from incidents.console.settings import ConsoleSettings

    view = IncidentView(max_incidents=1000)
    return create_app(ConsoleSettings(**settings), view, producer=None), view  # type: ignore[arg-type]


@pytest.mark.hostile
def test_dns_rebinding_and_cross_origin_posts_are_refused_and_pages_cannot_be_framed() -> None:
    """Issue 31 item 16: with no token, a POST whose Host and Origin both named another site wrote a verdict."""
    app, _ = console_app()
    own = {"host": "127.0.0.1:8090"}
    status, headers, _ = call(app, "GET", "/", own)
    assert status == 200 and headers["x-frame-options"] == "DENY" and "frame-ancestors 'none'" in \
        headers["content-security-policy"]
    assert call(app, "GET", "/", {"host": "localhost:8090"})[0] == 200
    form = {"content-type": "application/x-www-form-urlencoded"}
    rebound = {"host": "evil.example:8090", "origin": "http://evil.example:8090", **form}
    status, headers, text = call(app, "POST", "/incidents/x/benign", rebound, b"analyst=m&reason=r&hours=1")
    assert status == 400 and "evil.example" in text and headers["x-frame-options"] == "DENY"
    assert call(app, "GET", "/", {"host": "evil.example"})[0] == 400
    for origin in ("https://127.0.0.1:8090", "http://127.0.0.1:9999", "null", "http://evil.example"):
        assert call(app, "POST", "/incidents/x/benign", own | form | {"origin": origin}, b"")[0] == 403, origin
    assert call(app, "GET", "/healthz", {"host": "10.1.2.3:8090"})[0] != 400  # probes come by pod address
    anyhost, _ = console_app(allowed_hosts=["*"])
    assert call(anyhost, "GET", "/", {"host": "evil.example"})[0] == 200


@pytest.mark.hostile
def test_a_forged_record_with_zero_counts_or_a_surrogate_label_renders() -> None:
    app, view = console_app()
    rec = records(1)[0]
    rec |= {"features": {"src_bytes": 0, "count": 0}, "labels": {"x": 0}}
    view.apply(rec["incident_id"].encode(), json.dumps(rec).encode())
    forged = dict(rec, incident_id="inc-2", labels={"\ud800": 3})
    view.apply(b"inc-2", json.dumps(forged).encode())  # json.dumps escapes the lone surrogate as \ud800
    for incident_id in (rec["incident_id"], "inc-2"):
        status, _, text = call(app, "GET", f"/incidents/{incident_id}", {"host": "127.0.0.1:8090"})
        assert status == 200 and 'id="features"' in text, text[:300]


class FakeProducer:
    """Records what the console would write to the feedback topic (the real write is tested on a broker)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: object, **where: object) -> None:
        self.sent.append(json.loads(value))

    def flush(self, timeout: float) -> int:
        return 0


@pytest.mark.hostile
def test_revoke_from_the_console_writes_a_revocation_with_who_and_why() -> None:
    """Issue 31 item 14: the console's Revoke form writes what ``incidents feedback --revoke`` writes."""
    from incidents.console.app import create_app
    from incidents.console.settings import ConsoleSettings

    view = IncidentView(max_incidents=1000)
    rec = records(1)[0]
    rec["resolution"] = {"verdict": "benign", "analyst": "ann", "note": "lab", "decided_ms": T0, "until_ms": T0 + 1}
    view.apply(rec["incident_id"].encode(), json.dumps(rec).encode())
    producer = FakeProducer()
    app = create_app(ConsoleSettings(), view, producer)  # type: ignore[arg-type]
    own = {"host": "127.0.0.1:8090"}
    status, _, page = call(app, "GET", f"/incidents/{rec['incident_id']}", own)
    assert status == 200 and 'id="revoke"' in page
    form = own | {"content-type": "application/x-www-form-urlencoded"}
    status, headers, _ = call(app, "POST", f"/incidents/{rec['incident_id']}/revoke", form,
                              b"analyst=bob&reason=it+was+an+attack")
    assert status == 303 and "revoked=bob" in headers["location"]
    [sent] = producer.sent
    assert sent["verdict"] == "revoke" and sent["analyst"] == "bob" and sent["note"] == "it was an attack"


def test_the_detail_page_names_the_hosts_of_a_zeek_incident() -> None:
    app, view = console_app()
    rec = records(1)[0] | {"sources": {"10.0.0.5": 400}, "destinations": {"192.168.1.9": 3, "192.168.1.10": 2}}
    view.apply(rec["incident_id"].encode(), json.dumps(rec).encode())
    status, _, page = call(app, "GET", f"/incidents/{rec['incident_id']}", {"host": "127.0.0.1:8090"})
    assert status == 200 and 'id="hosts"' in page and "10.0.0.5" in page and "192.168.1.10" in page
