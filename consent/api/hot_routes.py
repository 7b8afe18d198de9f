"""The two hot routes, found before Litestar's router: POST /v1/decisions and POST /v1/subjects/{id}/consents.

They are the service's hot paths, and Litestar's router and exception middleware cost a noticeable share of
a decision's server CPU. The outermost layer (observability.py) asks `route` for every request; on a match
it calls the route's answer directly, anything else goes to Litestar. The Litestar handlers of both routes
stay registered (OpenAPI document, and what answers when a route is turned off: CONSENT_FAST_DECISIONS=0,
CONSENT_FAST_WRITES=0). A browser's request (an Origin header) goes to Litestar when CORS is configured, so
that it gets CORS headers.
"""

from __future__ import annotations

from consent.api.thin_asgi import HotRoute

DECISIONS = "/v1/decisions"
CONSENTS = "/v1/subjects/{subject_id}/consents"  # the template, as Litestar names the route
_SUBJECTS, _CONSENTS = "/v1/subjects/", "/consents"


class HotRoutes:
    def __init__(self, decide: HotRoute | None, change_consents: HotRoute | None, cors: bool) -> None:
        self._decide = decide
        self._change_consents = change_consents
        self.cors = cors  # requests with an Origin header go to Litestar's CORS handling

    def route(self, scope: dict) -> tuple[str, HotRoute] | None:
        """(route template, answer) for a request one of them answers, else None."""
        if scope["method"] != "POST":
            return None
        path = scope["path"]
        if path == DECISIONS:
            return (DECISIONS, self._decide) if self._decide is not None else None
        if self._change_consents is not None and path.startswith(_SUBJECTS) and path.endswith(_CONSENTS):
            # One path segment, as Litestar's {subject_id:str} matches it.
            subject_id = path[len(_SUBJECTS):-len(_CONSENTS)]
            if subject_id and "/" not in subject_id:
                scope["path_params"] = {"subject_id": subject_id}
                return CONSENTS, self._change_consents
        return None
