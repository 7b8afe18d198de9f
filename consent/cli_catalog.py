"""`consent catalog export|plan|apply`: the catalog as code, against a running server over HTTP.

The server is `--url` or CONSENT_URL; the admin key is CONSENT_ADMIN_KEY. `plan` exits like
`terraform plan -detailed-exitcode`: 0 when nothing would change, 2 when something would, 1 on error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml

EXIT_ERROR, EXIT_CHANGES = 1, 2


def add_commands(commands: Any) -> None:
    catalog = commands.add_parser(
        "catalog", help="the catalog as a document: export it, plan a document, apply it",
        description="The catalog as a document (YAML or JSON), against a running server: --url or CONSENT_URL, "
                    "with the admin key in CONSENT_ADMIN_KEY.")
    actions = catalog.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("export", help="print the live catalog as YAML that `apply` reproduces exactly")
    for name, summary in (("plan", "show what FILE would change, and whom it would affect; exit 0 when nothing "
                                   "would change, 2 when something would, 1 on error"),
                          ("apply", "apply FILE: every change in one transaction, or none")):
        action = actions.add_parser(name, help=summary)
        action.add_argument("file", metavar="FILE", help="a catalog document, YAML or JSON ('-': standard input)")
    for action in actions.choices.values():
        action.add_argument("--url", default=os.environ.get("CONSENT_URL"),
                            help="the server (default: CONSENT_URL)")


def run(args: argparse.Namespace) -> int:
    key = os.environ.get("CONSENT_ADMIN_KEY")
    if not args.url or not key:
        print("consent catalog: set --url (or CONSENT_URL) and CONSENT_ADMIN_KEY", file=sys.stderr)
        return EXIT_ERROR
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=60) as client:
            if args.action == "export":
                print(yaml.safe_dump(export(client), sort_keys=True, allow_unicode=True), end="")
                return 0
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
            answer = client.post(f"/v1/catalog/{args.action}", content=text.encode(),
                                 headers={"Content-Type": "application/yaml"})
    except (httpx.HTTPError, OSError) as error:
        print(f"consent catalog {args.action}: {error}", file=sys.stderr)
        return EXIT_ERROR
    if answer.status_code != 200:
        problem = answer.json() if answer.headers.get("content-type", "").endswith("json") else {}
        print(f"consent catalog {args.action}: {answer.status_code} {problem.get('code', '')}: "
              f"{problem.get('detail', answer.text[:300])}", file=sys.stderr)
        return EXIT_ERROR
    result = answer.json()
    print(readable(result))
    changed = any(change["action"] != "unchanged" for change in result["changes"])
    return EXIT_CHANGES if args.action == "plan" and changed else 0


def export(client: httpx.Client) -> dict[str, Any]:
    """The live catalog in the document's shape (GET /v1/catalog): what `apply` would leave unchanged."""
    answer = client.get("/v1/catalog")
    answer.raise_for_status()
    return answer.json()


def readable(result: dict[str, Any]) -> str:
    lines = []
    for change in result["changes"]:
        if change["action"] == "unchanged":
            continue
        sign = "+" if change["action"] == "create" else "~"
        material = " (material change: consent asked again)" if change.get("material") else ""
        lines.append(f"{sign} {change['kind']} {change['id']}{material}")
        for name, (old, new) in sorted(change["fields"].items()):
            lines.append(f"    {name}: {old!r} -> {new!r}" if change["action"] == "update" else f"    {name}: {new!r}")
        impact = change.get("impact")
        if impact:
            by_partner = ", ".join(f"{p}: {n}" for p, n in sorted(impact["by_partner"].items()))
            lines.append(f"    impact: {impact['subjects']} subjects" + (f" ({by_partner})" if by_partner else ""))
    unchanged = sum(change["action"] == "unchanged" for change in result["changes"])
    lines.append(f"{len(result['changes']) - unchanged} to change, {unchanged} unchanged"
                 + (f", {len(result['unmanaged'])} unmanaged (left as they are): "
                    + ", ".join(f"{u['kind']} {u['id']}" for u in result["unmanaged"]) if result["unmanaged"] else ""))
    return "\n".join(lines)
