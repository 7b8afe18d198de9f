"""The privacy center's pages: the page model in words of the visitor's language, rendered by Jinja2
(consent/api/templates/privacy_center/, autoescaped), each answer with the headers every page carries."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from litestar import Response
from markupsafe import Markup, escape

from consent.app.privacy_page import PurposeBlock
from consent.app.views import HistoryEvent
from consent.domain.catalog import Catalog
from consent.domain.durations import duration_fields
from consent.domain.events import SubjectErased

TEMPLATES = Path(__file__).parent / "templates" / "privacy_center"
_pages = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                            undefined=jinja2.StrictUndefined)
STYLE = (TEMPLATES / "style.css").read_bytes()


def security_headers(frame_ancestors: str) -> dict[str, str]:
    """On every answer: nothing from another origin, framed only where configured. (Never cached: the app
    sends `Cache-Control: no-store` on every route's answer, and the error pages add it themselves.)"""
    return {"Content-Security-Policy": f"default-src 'self'; base-uri 'none'; form-action 'self'; "
                                       f"frame-ancestors {frame_ancestors}",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def html(template: str, status: int, headers: dict[str, str], **context: Any) -> Response:
    body = _pages.get_template(template).render(title=context["t"]["title"], **context)
    return Response(body, status_code=status, media_type="text/html; charset=utf-8", headers=headers)


def message(t: dict, text: str, status: int, headers: dict[str, str], back: bool = False) -> Response:
    return html("message.html", status, headers, t=t, message=text, back=t["title"] if back else None)


def duration_in_words(text: str, t: dict) -> str:
    """`P1Y6M` as "1 year and 6 months" (or the language's words); the text itself if it does not parse."""
    fields = duration_fields(text)
    if fields is None:
        return text
    units = {"years": "Y", "months": "M", "weeks": "W", "days": "D", "hours": "H", "minutes": "MIN",
             "seconds": "S"}
    parts = [f"{n} {t['units'][units[name]][n != 1]}" for name, n in fields.items() if n]
    if len(parts) <= 1:
        return "".join(parts) or text
    return f"{', '.join(parts[:-1])} {t['and']} {parts[-1]}"


def blocks_in_words(blocks: list[PurposeBlock], t: dict, controller: str) -> list[dict[str, Any]]:
    shown = []
    for block in blocks:
        purpose = block.purpose
        facts = [t[f"legal_basis.{purpose.legal_basis}"],
                 t["retention"].format(duration=duration_in_words(purpose.retention, t))]
        if purpose.sale_or_sharing:
            facts.append(t["sale"])
        switches = []
        for switch in block.switches:
            who = switch.partner_name or t["first_party"].format(controller=controller)
            if block.control == "objection" and switch.state != "objected":
                state_text = t["state.not_objected"]  # granted (an objection lifted) or nothing recorded
            elif switch.state == "granted" and switch.expires_at:
                state_text = t["state.granted_until"].format(date=switch.expires_at.date().isoformat())
            else:
                state_text = t[f"state.{switch.state}"]
            uses = ", ".join(f"{s.title} ({t['sensitivity.' + s.sensitivity]})" for s in switch.scopes)
            switches.append({
                "key": switch.key, "partner": switch.partner, "id": f"choice-{purpose.id}-{switch.partner}",
                "checked": switch.checked, "state": switch.state, "state_text": state_text,
                "label": (t["object"].format(purpose=purpose.title) if block.control == "objection"
                          else t["allow"].format(who=who, purpose=purpose.title)),
                "uses": t["partner_uses"].format(partner=who, scopes=uses) if uses else ""})
        shown.append({"id": purpose.id, "title": purpose.title, "description": purpose.description, "facts": facts,
                      "information": block.control == "information",
                      "switches": Markup("").join(_switch_html(purpose.id, s) for s in switches)})
    return shown


def _switch_html(purpose_id: str, s: dict[str, Any]) -> Markup:
    """One switch: built here rather than in the template, where its dozen escaped values made up most of a
    page's rendering time (60 switches: about 1 ms). Every value goes through `escape`."""
    key, ident, state = escape(s["key"]), escape(s["id"]), escape(s["state"])
    uses = f" · {escape(s['uses'])}" if s["uses"] else ""
    return Markup(
        f'<div class="switch">\n<input type="hidden" name="shown" value="{key}">\n'
        f'<input type="checkbox" id="{ident}" name="choice" value="{key}" data-purpose="{escape(purpose_id)}" '
        f'data-partner="{escape(s["partner"])}" aria-describedby="{ident}-state"{" checked" if s["checked"] else ""}>\n'
        f'<label for="{ident}">{escape(s["label"])}</label>\n'
        f'<p id="{ident}-state" class="state state-{state}">{escape(s["state_text"])}{uses}</p>\n</div>\n')


_ERASED = SubjectErased.__struct_config__.tag


def history_in_words(events: list[HistoryEvent], catalog: Catalog, t: dict, controller: str) -> list[dict[str, Any]]:
    """A subject's events, newest first; every one but the erasure is a choice with a signed receipt."""
    items = []
    for event in reversed(events):
        data = event.data
        purpose = catalog.purposes.get(data.get("purpose", ""))
        partner = catalog.partners.get(data.get("partner") or "")
        who = partner.name if partner else t["first_party"].format(controller=controller)
        template = t.get(f"event.{event.type}", event.type)
        items.append({"event_id": str(event.event_id), "at_iso": event.occurred_at.isoformat(),
                      "at": _when(event.occurred_at),
                      "text": template.format(who=who, purpose=purpose.title if purpose else data.get("purpose", "")),
                      "receipt": event.type != _ERASED})
    return items


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
