"""The triage console's web app: server-side HTML (Jinja2, escaped by default) with htmx for live updates.

No JavaScript build step: htmx 2 (0BSD) is vendored in ``static/`` and the pages work as plain HTML forms
without it. Routes: ``/`` the incident list (best priority first, paged, refreshed every few seconds while
the view changes), ``/incidents/{id}`` the detail with "mark benign", ``/verdicts`` who muted what, when,
why and whether it is still in force, ``/healthz`` and ``/readyz``.

"Mark benign" writes exactly the verdict ``python -m incidents feedback`` writes (``incidents.feedback.send``).
A state-changing request from another origin is refused (a page elsewhere cannot mute alerts through an
analyst's browser), and with a token set every request needs it (``incidents.console.auth``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from confluent_kafka import Producer
from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from core import timebounds
from incidents.console.auth import guard
from incidents.console.settings import ConsoleSettings
from incidents.console.view import IncidentView
from incidents.feedback import FeedbackSettings, VerdictListSettings, send, verdicts

HERE = Path(__file__).parent
LIVE_REFRESH_S = 3


def _time(ms: Any) -> str:
    text = timebounds.iso(ms)
    return "?" if text is None else text[:19].replace("T", " ")


def _bar(n: Any, most: Any) -> int:
    """A bar's width in pixels (0-120) for count ``n`` of ``most``: defined for any record, including a forged one
    whose counts are all zero or negative (issue 31 item 16 found a detail page dividing by zero)."""
    try:
        return max(0, min(120, round(120 * float(n) / float(most)))) if float(most) > 0 else 0
    except (TypeError, ValueError, OverflowError):
        return 0


def create_app(s: ConsoleSettings, view: IncidentView, producer: Producer) -> FastAPI:
    """The console over ``view`` (followed by ``incidents.console.view.follow``), writing verdicts with
    ``producer``."""
    app = FastAPI(title="kdd incident console", docs_url=None, redoc_url=None, openapi_url=None)
    app.middleware("http")(guard(s.token.get_secret_value() if s.token else None, s.hosts_allowed))
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    pages = Jinja2Templates(directory=HERE / "templates")
    pages.env.filters["time"] = _time
    pages.env.filters["bar"] = _bar

    @app.get("/", response_class=HTMLResponse)
    def incident_list(request: Request, page: int = 0, closed: bool = False) -> Response:
        return pages.TemplateResponse(request, "list.html", _listing(s, view, page, closed))

    @app.get("/rows", response_class=HTMLResponse)
    def rows(request: Request, page: int = 0, closed: bool = False, seen: int = -1) -> Response:
        """The list's body for htmx; 204 (htmx keeps the page) while nothing changed since ``seen``."""
        if seen == view.version:
            return Response(status_code=204)
        return pages.TemplateResponse(request, "rows.html", _listing(s, view, page, closed))

    @app.get("/incidents/{incident_id}", response_class=HTMLResponse)
    def detail(request: Request, incident_id: str, sent: str | None = None, revoked: str | None = None) -> Response:
        return pages.TemplateResponse(request, "detail.html", _detail(s, view, incident_id, sent=sent) |
                                      {"revoked": revoked})

    @app.post("/incidents/{incident_id}/benign", response_class=HTMLResponse)
    def mark_benign(request: Request, incident_id: str, analyst: Annotated[str, Form()],
                    reason: Annotated[str, Form()], hours: Annotated[float, Form()]) -> Response:
        return _submit(Form_(pages, s, view, producer, request, incident_id), "sent",
                       lambda: _verdict(s, incident_id, analyst, reason, hours))

    @app.post("/incidents/{incident_id}/revoke", response_class=HTMLResponse)
    def revoke(request: Request, incident_id: str, analyst: Annotated[str, Form()],
               reason: Annotated[str, Form()]) -> Response:
        return _submit(Form_(pages, s, view, producer, request, incident_id), "revoked",
                       lambda: _verdict(s, incident_id, analyst, reason, 1.0).model_copy(update={"revoke": True}))

    @app.get("/verdicts", response_class=HTMLResponse)
    def verdict_page(request: Request) -> Response:
        listing = VerdictListSettings(kafka=s.kafka, feedback_topic=s.feedback_topic, state_topic=s.state)
        return pages.TemplateResponse(request, "verdicts.html", {"rows": list(reversed(verdicts(listing)))})

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/readyz", response_class=PlainTextResponse)
    def readyz() -> Response:
        if view.error or not view.caught_up:
            return PlainTextResponse(view.error or f"reading {s.incident_topic}", status_code=503)
        return PlainTextResponse(f"ready: {len(view)} incidents")

    return app


@dataclasses.dataclass(frozen=True)
class Form_:
    """What answering a verdict form needs."""

    pages: Jinja2Templates
    settings: ConsoleSettings
    view: IncidentView
    producer: Producer
    request: Request
    incident_id: str


def _submit(f: Form_, done: str, build: Callable[[], FeedbackSettings]) -> Response:
    """Send the verdict (or revocation) a form asks for; a bad form is 400, an undelivered one 503; on success,
    back to the incident with ``?{done}=analyst``."""
    context = _detail(f.settings, f.view, f.incident_id)
    try:
        verdict = build()
        send(verdict, f.producer)
    except (ValueError, RuntimeError) as exc:
        return f.pages.TemplateResponse(f.request, "detail.html", context | {"error": str(exc)},
                                        status_code=400 if isinstance(exc, ValueError) else 503)
    return RedirectResponse(f"/incidents/{quote(f.incident_id)}?{done}={quote(verdict.analyst)}", status_code=303)


def _detail(s: ConsoleSettings, view: IncidentView, incident_id: str, sent: str | None = None) -> dict[str, Any]:
    inc = view.get(incident_id)
    if inc is None:
        raise HTTPException(404, f"no incident {incident_id!r} on {s.incident_topic} (yet)")
    return {"inc": inc, "doc": inc.to_dict(), "sent": sent, "max_hours": s.max_verdict_s / 3600, "error": None}


def _verdict(s: ConsoleSettings, incident_id: str, analyst: str, reason: str, hours: float) -> FeedbackSettings:
    """The verdict the form asks for, as the feedback CLI would build it; ValueError names what is wrong."""
    if not 0 < hours * 3600 <= s.max_verdict_s:
        raise ValueError(f"the duration must be above 0 and at most {s.max_verdict_s / 3600:g} hours")
    if not analyst.strip() or not reason.strip():
        raise ValueError("say who you are and why the incident is benign (both are kept with the verdict)")
    try:
        return FeedbackSettings(kafka=s.kafka, feedback_topic=s.feedback_topic, incident=incident_id,
                                for_s=hours * 3600, analyst=analyst.strip(), note=reason.strip())
    except ValidationError as exc:
        raise ValueError("; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in exc.errors())) from None


def _listing(s: ConsoleSettings, view: IncidentView, page: int, closed: bool) -> dict[str, Any]:
    version = view.version  # read first: a change while ranking shows on the next refresh
    ranked = view.ranked(include_closed=closed)
    pages = max(1, -(-len(ranked) // s.page_size))
    page = min(max(page, 0), pages - 1)
    return {"incidents": ranked[page * s.page_size:(page + 1) * s.page_size], "page": page, "pages": pages,
            "total": len(ranked), "closed": closed, "version": version, "refresh_s": LIVE_REFRESH_S,
            "unreadable": view.unreadable, "topic": s.incident_topic, "first_rank": page * s.page_size + 1}
