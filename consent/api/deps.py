"""What routes get injected, by name (see the `dependencies` in consent/api/app.py)."""

from litestar.di import NamedDependency

from consent.api.auth import Principal
from consent.app.decisions import DecisionService
from consent.app.partner_access import PartnerAccess
from consent.app.services import ConsentService

Caller = NamedDependency[Principal]
Service = NamedDependency[ConsentService]
Decisions = NamedDependency[DecisionService]
Access = NamedDependency[PartnerAccess]
