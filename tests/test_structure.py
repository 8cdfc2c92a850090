"""The shape of the code base (docs/architecture.md): the top level holds the entry points and the
names users know, everything else lives in the ``emospoof`` package; no import cycle, no import from
a lower layer to a higher one, entry points that only parse arguments and call a recipe and that no
module imports, every package module listed in the architecture page, no source file over 500
lines outside tests, a README that is a landing page whose links and commands are valid."""
from __future__ import annotations

import ast
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

ENTRY_POINTS = ("main", "inference", "train_ser", "evaluation", "compare", "download_weights", "download_dataset")
# What the top level may hold besides the entry points (docs/architecture.md).
TOP_LEVEL = {"data_utils.py", "utils.py", "config", "models", "emospoof", "tests", "benchmarks", "docs", "examples",
             "README.md", "requirements.txt", ".gitignore", ".ci"}
VAGUE_NAMES = {"utils", "helpers", "misc", "common_utils", "util"}
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
    assert len(graph) > 30 and "models.AASIST" in graph["models.emotion.conditioned"]  # the walk sees the imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_an_entry_point():
    for module, imported in import_graph().items():
        assert not imported & set(ENTRY_POINTS), f"{module} imports the entry point(s) {imported & set(ENTRY_POINTS)}"


def tracked_files() -> list[str]:
    listed = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return listed.stdout.splitlines()


def test_the_top_level_holds_the_entry_points_and_the_names_users_know():
    top = {path.split("/")[0] for path in tracked_files()}
    allowed = TOP_LEVEL | {f"{name}.py" for name in ENTRY_POINTS}
    assert top - allowed == set(), f"unexpected at the top level: {sorted(top - allowed)}"
    assert {"main.py", "data_utils.py", "utils.py", "emospoof", "models", "config"} <= top


def test_entry_points_only_parse_arguments_and_call_a_recipe():
    for name in ENTRY_POINTS:
        tree = ast.parse((REPO / f"{name}.py").read_text())
        functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
        assert functions <= {"parse_args", "main"}, f"{name}.py defines {sorted(functions - {'parse_args', 'main'})}"
        assert not [node for node in tree.body if isinstance(node, ast.ClassDef)], f"{name}.py defines a class"


def layers() -> list[tuple[int, str]]:
    """(layer, module prefix) from the layer table of docs/architecture.md, rows '| N | `a`, `b` |'."""
    text = (REPO / "docs/architecture.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+?) \|", section, flags=re.M)
    return [(int(level), name) for level, cell in rows for name in re.findall(r"`([\w.]+)`", cell)]


def layer_of(module: str, table: list[tuple[int, str]]) -> int | None:
    matches = [(len(prefix), level) for level, prefix in table if module == prefix or module.startswith(prefix + ".")]
    if module in ENTRY_POINTS or module.startswith("benchmarks."):
        return max(level for level, _ in table) + 1
    if module == "emospoof":  # the package's __init__: a docstring, no imports
        return 0
    return max(matches)[1] if matches else None


def test_every_module_has_a_layer_and_imports_only_its_own_layer_or_lower():
    table = layers()
    assert len(table) >= 8, "docs/architecture.md has no layer table"
    graph = import_graph()
    unplaced = sorted(m for m in graph if layer_of(m, table) is None)
    assert not unplaced, f"modules without a layer in docs/architecture.md: {unplaced}"
    upward = [f"{a} (layer {layer_of(a, table)}) -> {b} (layer {layer_of(b, table)})"
              for a, targets in graph.items() for b in targets if layer_of(b, table) > layer_of(a, table)]
    assert not upward, "imports from a lower layer to a higher one: " + "; ".join(upward)


def test_the_layer_check_catches_an_upward_import():
    table = [(0, "emospoof.core"), (5, "emospoof.cm")]
    assert layer_of("emospoof.core.config", table) == 0 and layer_of("emospoof.cm.training", table) == 5
    assert layer_of("main", table) == 6


def test_every_package_module_is_listed_in_the_architecture_page():
    text = (REPO / "docs/architecture.md").read_text()
    modules = [path for path in tracked_files() if path.endswith(".py") and path.startswith(("emospoof/", "models/"))
               and not path.endswith("__init__.py")]
    missing = [path for path in modules if f"`{path.split('/', 1)[1]}`" not in text and f"`{path}`" not in text]
    assert not missing, f"not listed in docs/architecture.md: {missing}"


def test_package_modules_say_what_they_hold():
    vague = [path for path in tracked_files() if path.startswith(("emospoof/", "models/")) and path.endswith(".py")
             and Path(path).stem in VAGUE_NAMES]
    assert not vague, f"modules named only for being shared: {vague}"


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


# The suite's command (README, docs/testing.md, .ci/run): parallel, and it names the slowest tests.
TEST_COMMAND = ["-m", "pytest", "-q", "-n", "auto", "--maxprocesses", "4", "--dist", "worksteal", "--durations=15",
                "tests"]


def test_ci_runs_the_readme_test_command():
    ci = [shlex.split(line)[1:] for line in (REPO / ".ci/run").read_text().splitlines()
          if line.startswith(("python -m pytest", "python3 -m pytest"))]
    assert ci == [TEST_COMMAND]
    assert TEST_COMMAND in commands((REPO / "docs/testing.md").read_text())


def test_readme_names_the_first_run_and_the_test_command():
    listed = commands(readme())
    assert any(c[:3] == ["inference.py", "--config", "config/AASIST.conf"] for c in listed)
    assert TEST_COMMAND in listed


def test_commands_of_the_readme_and_docs_name_real_scripts_options_and_configs(run_main):
    """Every command in the README and the docs pages names an entry point, benchmark or module
    that exists, every option it passes is one that script offers, and every config it names
    exists. An entry point's ``--help`` comes from its ``main(argv)`` in this process (a fresh
    interpreter per script: 14 s against 3 s, measured, on a loaded 2-core machine); a benchmark's
    from a process."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    listed = [(page.name, command) for page in pages for command in commands(page.read_text())]
    assert len(listed) > 40
    help_texts: dict[str, str] = {}
    for page, command in listed:
        if command[0] == "-m":
            module = command[1]
            assert module == "pytest" or (REPO / (module.replace(".", "/") + ".py")).is_file(), (page, command)
            continue
        script = command[0]
        assert (REPO / script).is_file(), (page, command)
        if script not in help_texts:
            if script.removesuffix(".py") in ENTRY_POINTS:
                done = run_main(importlib.import_module(script.removesuffix(".py")).main, "--help")
            else:
                done = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True, text=True,
                                      timeout=120)
            assert done.returncode == 0, done.stderr
            help_texts[script] = done.stdout
        for option in (arg.split("=")[0] for arg in command[1:] if arg.startswith("--")):
            assert option in help_texts[script], f"{page}: {' '.join(command)}: {script} has no option {option}"
        for value in command[1:]:
            if value.startswith("config/"):
                assert (REPO / value).is_file(), f"{page}: {' '.join(command)}: {value} not found"
