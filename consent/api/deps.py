"""What routes get injected, by name (see the `dependencies` in consent/api/app.py)."""

from litestar.di import NamedDependency

from consent.api.auth import Principal
from consent.app.audit import AuditService
from consent.app.catalog_service import CatalogService
from consent.app.decisions import DecisionService
from consent.app.partner_access import PartnerAccess
from consent.app.subject_service import SubjectService

Caller = NamedDependency[Principal]
Catalogs = NamedDependency[CatalogService]
Subjects = NamedDependency[SubjectService]
Audits = NamedDependency[AuditService]
Decisions = NamedDependency[DecisionService]
Access = NamedDependency[PartnerAccess]
