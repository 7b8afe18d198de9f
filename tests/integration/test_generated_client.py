"""Partners generate their clients from the served document: one generated here must build and import,
with a method for every operation, named by its operationId."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
import consent_client
names = [m.name for m in pkgutil.walk_packages(consent_client.__path__, "consent_client.")]
for name in names:
    importlib.import_module(name)
print(len(names))
"""


def snake(operation_id: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation_id).lower()


@pytest.mark.parametrize("migrated_url", ["sqlite"], indirect=True)  # the document is the same on both
async def test_a_client_generated_from_the_served_document_builds_and_imports(client, tmp_path):
    document = (await client.get("/schema/openapi.json")).json()
    (tmp_path / "openapi.json").write_text(json.dumps(document))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff hooks
    generated = subprocess.run(
        [str(BIN / "openapi-python-client"), "generate", "--path", "openapi.json", "--meta", "none",
         "--output-path", "consent_client", "--fail-on-warning"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    package = tmp_path / "consent_client"
    modules = {path.stem for path in (package / "api").rglob("*.py")}
    operation_ids = [operation["operationId"] for item in document["paths"].values() for operation in item.values()]
    assert sorted(snake(i) for i in operation_ids if snake(i) not in modules) == []
    compiled = subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)],
                              capture_output=True, text=True, timeout=300)
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    imported = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr
    assert int(imported.stdout) > len(operation_ids)
