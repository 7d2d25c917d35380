"""Routing (issue 32): the detector's alert key, the incident id and the verdict key all name one partition per
kind; the page budget's partition shares add up to the whole budget."""

from __future__ import annotations

import pytest

from core.routing import alert_route, incident_partition, kind_route
from incidents.alert_input import parse_alert
from incidents.book import IncidentBook, kind
from incidents.triage import PAGE, REVIEW, Budget, share
from tests.unit.test_triage import doc


def test_the_detector_key_is_the_route_of_the_kind_the_incident_service_reads() -> None:
    # a lone surrogate (read back as U+FFFD) and a name longer than the service keeps route alike too
    for service, top in (("ecr_i", "service"), ("http", "src_bytes"), ("\u00e9\ud800", ""), ("x" * 300, "y" * 99)):
        d = doc(1, 1_700_000_000_000, service=service, top=top)
        key = alert_route(d["categories"].values(), d["top_features"][0]["feature"])  # as detector/alerts.py keys it
        alert = parse_alert(json_bytes(d), 0)
        assert key == kind_route(kind(alert))
    no_features = {**doc(2, 1_700_000_000_000), "top_features": []}
    assert alert_route(no_features["categories"].values(), None) == kind_route(kind(parse_alert(
        json_bytes(no_features), 0)))


def test_an_incident_id_names_its_books_partition_where_a_verdict_on_it_goes() -> None:
    book = IncidentBook(gap_ms=30_000, partition=7)
    filing = book.add(parse_alert(json_bytes(doc(1, 1_700_000_000_000)), 0))
    incident_id = filing.changed[0].incident_id
    assert incident_id.startswith("inc-p7-") and incident_partition(incident_id) == 7
    # ids from before partitioned books (one partition) and forged ones name none: never an exception
    for other in ("inc-0123456789-1700000000000", "inc-zzzz", "", "inc-p-1", "inc-p99999999-x", "p7-inc"):
        assert incident_partition(other) is None
    # two books of one kind (a forged key put some of its alerts on another partition) never share an id
    other_book = IncidentBook(gap_ms=30_000, partition=8)
    twin = other_book.add(parse_alert(json_bytes(doc(1, 1_700_000_000_000)), 0)).changed[0].incident_id
    assert twin != incident_id and incident_partition(twin) == 8


@pytest.mark.parametrize("partitions", [1, 2, 3, 4, 7, 12, 64])
@pytest.mark.parametrize("budget", [1, 2, 5, 20, 33, 100])
def test_partition_shares_add_up_to_the_whole_budget_and_reserve(budget: int, partitions: int) -> None:
    parts = [Budget.share_of(budget, 2.0, p, partitions) for p in range(partitions)]
    assert sum(b.per_hour for b in parts) == budget == sum(share(budget, p, partitions) for p in range(partitions))
    assert sum(b.reserve for b in parts) == max(1, budget // 5) == Budget(budget, 2.0).reserve
    assert max(b.per_hour for b in parts) - min(b.per_hour for b in parts) <= 1


def test_a_partition_with_no_share_pages_nothing_and_restores_no_reserve_pages() -> None:
    empty = Budget.share_of(2, 2.0, 3, 4)  # budget 2 over 4 partitions: partition 3 has none, nor any reserve
    assert (empty.per_hour, empty.reserve) == (0, 0)
    assert empty.recompute([50.0, 40.0]) == 2.0
    assert empty.decide(1e6, 0)[0] == REVIEW
    # a state record with escalations (forged, or from another split) keeps none of them: items[-0:] is all
    empty.restore({"line": 3.0, "pages": [1, 2, 3], "strengths": [9.0, 9.0, 9.0], "escalations": [1, 2],
                   "minute": 0, "filed": 3})
    assert empty.pages == [] and empty.escalations == [] and empty.strengths == []
    some = Budget.share_of(2, 2.0, 0, 4)
    assert (some.per_hour, some.reserve) == (1, 1)
    assert some.decide(10.0, 0)[0] == PAGE and some.decide(10.0, 1)[0] == REVIEW
    some.restore({"line": 3.0, "pages": [1, 2, 3], "strengths": [1.0, 2.0, 3.0], "escalations": [5, 6],
                  "minute": 0, "filed": 3})
    assert some.pages == [2, 3] and some.strengths == [2.0, 3.0] and some.escalations == [6]


def json_bytes(d: dict[str, object]) -> bytes:
    import json

    return json.dumps(d).encode()
