"""Every third-party module the service imports is a dependency the package declares itself."""

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imported_top_level_modules() -> set[str]:
    names: set[str] = set()
    for path in (ROOT / "consent").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"consent", "__future__"}


def _declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            for requirement in project["dependencies"]}


def test_every_imported_package_is_declared():
    providers = packages_distributions()
    declared = _declared_distributions()
    undeclared = {}
    for module in sorted(_imported_top_level_modules()):
        distributions = {name.lower().replace("_", "-") for name in providers.get(module, [])}
        assert distributions, f"{module} is imported but no installed distribution provides it"
        if not distributions & declared:
            undeclared[module] = sorted(distributions)
    assert not undeclared, f"imported but only reached through another package: {undeclared}"


def _locked(name: str) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", (ROOT / name).read_text(), re.M)
    return {package.lower().replace("_", "-").replace(".", "-"): version for package, version in pins}


def test_the_lock_files_pin_every_declared_dependency_within_its_range():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for lock, requirements in (("requirements.lock", project["dependencies"]),
                               ("requirements-dev.lock", project["dependencies"]
                                + project["optional-dependencies"]["dev"])):
        pinned = _locked(lock)
        for line in requirements:
            requirement = Requirement(line)
            name = requirement.name.lower().replace("_", "-").replace(".", "-")
            assert name in pinned, f"{lock} does not pin {name}: run `make lock`"
            assert requirement.specifier.contains(pinned[name], prereleases=True), (
                f"{lock} pins {name}=={pinned[name]} outside {requirement.specifier}: run `make lock`")
