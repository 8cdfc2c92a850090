"""The shape of the code base: no import cycle among the project's modules, entry points that no
module imports, no source file over 500 lines outside tests, a README that is a landing page whose
links and commands are valid."""
from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

ENTRY_POINTS = ("main", "inference", "train_ser", "evaluation", "download_weights", "download_dataset")
MAX_LINES = 500
MAX_README_LINES = 200


def project_modules() -> dict[str, Path]:
    """Module name -> file, for every Python file of the project outside tests."""
    modules = {}
    for path in sorted(REPO.rglob("*.py")):
        relative = path.relative_to(REPO)
        if relative.parts[0] in ("tests", ".git") or any(part.startswith(".") for part in relative.parts):
            continue
        name = ".".join(relative.with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``path`` imports anywhere in the file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from models import AASIST`` imports the module models.AASIST
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in modules and name != "models"}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "models.AASIST" in graph["models.emotion"]  # the walk sees the imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_an_entry_point():
    for module, imported in import_graph().items():
        assert not imported & set(ENTRY_POINTS), f"{module} imports the entry point(s) {imported & set(ENTRY_POINTS)}"


def test_no_source_file_over_the_limit():
    too_long = {name: n for name, path in project_modules().items()
                if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not too_long, f"over {MAX_LINES} lines: {too_long}"


# ---------------------------------------------------------------------------------------------
# README and docs


def readme() -> str:
    return (REPO / "README.md").read_text()


def test_readme_is_a_landing_page_with_docs_beside_it():
    text = readme()
    assert len(text.splitlines()) <= MAX_README_LINES
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    assert len(pages) >= 6
    for page in pages:
        assert f"docs/{page}" in text, f"README does not link docs/{page}"


@pytest.mark.parametrize("document", ["README.md", *sorted(p.relative_to(REPO).as_posix()
                                                         for p in (REPO / "docs").glob("*.md"))])
def test_relative_links_point_to_existing_files(document):
    path = REPO / document
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{document}: broken link {target}"


def commands(text: str) -> list[list[str]]:
    """``python ...`` commands of the fenced shell blocks, comments removed."""
    found = []
    for block in re.findall(r"```(?:bash|sh|shell)?\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith(("python ", "python3 ")):
                found.append(shlex.split(line)[1:])
    return found


def test_readme_commands_name_real_scripts_and_options():
    """Every README command names an entry point (or module) that exists, and every option it
    passes is one that entry point offers."""
    listed = commands(readme())
    assert any(c[:3] == ["inference.py", "--config", "config/AASIST.conf"] for c in listed)
    assert ["-m", "pytest", "-q", "-n", "auto", "--maxprocesses", "4", "--dist", "worksteal", "tests"] in listed
    help_texts: dict[str, str] = {}
    for command in listed:
        if command[0] == "-m":
            module = command[1]
            assert module == "pytest" or (REPO / (module.replace(".", "/") + ".py")).is_file(), command
            continue
        script = command[0]
        assert (REPO / script).is_file(), command
        if script not in help_texts:
            done = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, done.stderr
            help_texts[script] = done.stdout
        for option in (arg.split("=")[0] for arg in command[1:] if arg.startswith("--")):
            assert option in help_texts[script], f"{' '.join(command)}: {script} has no option {option}"
        for value in command[1:]:
            if value.startswith("config/"):
                assert (REPO / value).is_file(), f"{' '.join(command)}: {value} not found"
