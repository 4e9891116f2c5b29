"""The layout's rules, checked: plug-in libraries stay free of the core, no import cycles between the core's
packages and stages, and no module grows past what a newcomer can hold in their head."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

PACKAGES = ("adaptive_pause", "policies", "rewards")


def _imports(path: Path) -> set[str]:
    """Absolute module names a file imports (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                names.add(node.module)
    return names


@pytest.mark.parametrize("library", ["policies", "rewards"])
def test_plugin_libraries_never_import_the_core(library):
    offenders = {str(path.relative_to(REPO)): sorted(n for n in _imports(path) if n.split(".")[0] == "adaptive_pause")
                 for path in (REPO / library).rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}
    # and at run time: importing the library loads nothing of the core
    code = f"import sys, {library}; print(any(m.split('.')[0] == 'adaptive_pause' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_stages_do_not_import_sibling_stages():
    """training/pretrain and training/finetune, the ppo, eval and envs packages: no lateral imports between
    stages (shared machinery lives in a lower module: training/loop.py, collators.py, config.py ...)."""
    stages = {"adaptive_pause.training.pretrain", "adaptive_pause.training.finetune", "adaptive_pause.ppo.trainer",
              "adaptive_pause.eval.sweep", "adaptive_pause.eval.eval_pauses"}
    for stage in stages:
        path = REPO / (stage.replace(".", "/") + ".py")
        assert not (_imports(path) & (stages - {stage})), stage


def test_core_packages_have_no_import_cycles():
    graph = {}
    for path in (REPO / "adaptive_pause").rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        graph[name] = {n for n in _imports(path) if n in {".".join(p.relative_to(REPO).with_suffix("").parts)
                                                             .removesuffix(".__init__")
                                                             for p in (REPO / "adaptive_pause").rglob("*.py")}}
    visiting, done = set(), set()

    def visit(node, trail):
        if node in done:
            return
        assert node not in visiting, " -> ".join(trail + [node])
        visiting.add(node)
        for nxt in graph.get(node, ()):
            visit(nxt, trail + [node])
        visiting.discard(node)
        done.add(node)

    for node in graph:
        visit(node, [])


def test_modules_stay_small():
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines())
             for package in PACKAGES for p in (REPO / package).rglob("*.py")}
    assert not {k: v for k, v in sizes.items() if v > 500}
    session = (REPO / "adaptive_pause/decoding/session.py").read_text().splitlines()
    start = next(i for i, line in enumerate(session) if line.startswith("class DecodeSession"))
    assert len(session) - start <= 350
