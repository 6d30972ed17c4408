"""The layout's rules over the import graph (DESIGN.md, "Layout" and "The seam"): each top-level folder imports only
folders to its left, and nothing above the local twin imports it but the backend factory."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Each folder and the genaiops folders it may import (every folder may import itself).
ALLOWED = {
    "contracts": set(),
    "steps": {"contracts"},
    "monitoring": {"contracts", "steps"},
    "model_registry": {"contracts", "steps", "monitoring"},
    "serving": {"contracts", "steps", "monitoring", "model_registry"},
    "local_aws": {"contracts", "steps", "monitoring", "serving"},
    "pipelines": {"contracts", "steps", "monitoring", "model_registry", "serving"},
    "infra_cdk": {"contracts", "steps", "monitoring"},
}
FACTORY = "pipelines/backends.py"  # the one module above the twin that starts it and hands out its clients


def imported(source: str) -> set[str]:
    """The top-level names a module imports, wherever in the module the import is (functions included)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def violations(files: dict[str, str]) -> list[str]:
    """`path: imports folder` for every import the rules forbid, given each module's path and source."""
    found = []
    for path, source in sorted(files.items()):
        folder = path.split("/")[0]
        allowed = ALLOWED[folder] | {folder} | ({"local_aws"} if path == FACTORY else set())
        for name in sorted(imported(source) & set(ALLOWED)):
            if name not in allowed:
                found.append(f"{path}: imports {name}")
    return found


def test_every_folder_imports_only_folders_to_its_left_and_only_the_factory_knows_the_twin() -> None:
    files = {str(p.relative_to(REPO)): p.read_text() for folder in ALLOWED for p in (REPO / folder).rglob("*.py")}
    assert len(files) > 100
    assert violations(files) == []


@pytest.mark.parametrize(("path", "source", "folder"), [
    ("pipelines/flows/release.py", "from local_aws.server import client\n", "local_aws"),
    ("pipelines/flows/monitor.py", "def f():\n    import local_aws.endpoints\n", "local_aws"),
    ("pipelines/cli/endpoints.py", "from local_aws import control_plane\n", "local_aws"),
    ("serving/deployer.py", "from local_aws import control_plane\n", "local_aws"),
    ("monitoring/alarms.py", "from serving.deployer import Version\n", "serving"),
    ("contracts/tags.py", "from steps import artifacts\n", "steps"),
])
def test_the_rule_fails_an_import_across_the_seam_or_to_the_right(path: str, source: str, folder: str) -> None:
    assert violations({path: source}) == [f"{path}: imports {folder}"]


def test_the_factory_alone_may_start_the_twin() -> None:
    assert violations({FACTORY: "from local_aws.server import ensure\n"}) == []
