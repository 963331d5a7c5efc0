"""The shape the design asks for, checked on the source: the runtime never imports training recipes,
no module reaches into another's private names, distill's student and trainer do not import
each other, and the import graph (imports inside functions included) has no circles and no import of
a front door from below."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "diffcli"
TRAINING = "diffcli.training"  # every training recipe and its helpers, and nothing else, live in diffcli/training/
# the `diffcli distill` command starts the distill trainer: the one runtime door into training, and where it leads
DOORS_INTO_TRAINING = {"diffcli.distill.runner": {"diffcli.training.distill.trainer"}}


def _imports() -> dict[str, set[tuple[str, str | None]]]:
    """module -> {(imported module, imported name or None)}: every import of the file, those inside
    functions included, relative ones resolved."""
    found: dict[str, set[tuple[str, str | None]]] = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps: set[tuple[str, str | None]] = set()
        package = module.split(".") if parts[-1] == "__init__" else module.split(".")[:-1]
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:  # `from . import x`, `from .x import y`
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                deps.update((base, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffcli"):
                deps.update((node.module, alias.name) for alias in node.names)
            elif isinstance(node, ast.Import):
                deps.update((alias.name, None) for alias in node.names if alias.name.startswith("diffcli"))
        found[module] = deps
    return found


def _targets(deps) -> set[str]:
    return {m for m, _ in deps} | {f"{m}.{n}" for m, n in deps if n}


def _in_training(module: str) -> bool:
    return module == TRAINING or module.startswith(TRAINING + ".")


def _runtime_imports_of_training(imports) -> dict[str, list[str]]:
    """Runtime module (outside diffcli/training/) -> the training modules it imports, beyond its door."""
    offenders = {}
    for module, deps in imports.items():
        if _in_training(module):
            continue
        # `from diffcli.a import b` imports the module diffcli.a.b where b is one, else diffcli.a
        targets = {f"{dep}.{name}" if name and f"{dep}.{name}" in imports else dep for dep, name in deps}
        bad = sorted(t for t in targets if _in_training(t) and t not in DOORS_INTO_TRAINING.get(module, set()))
        if bad:
            offenders[module] = bad
    return offenders


def test_the_runtime_never_imports_training():
    """The folder rule: no module outside diffcli/training/ imports diffcli.training (imports inside
    functions included), except the documented door (`diffcli distill`), and that only to its trainer."""
    imports = _imports()
    training = {m for m in imports if _in_training(m)}
    assert {"diffcli.training.common", "diffcli.training.distill.trainer"} <= training  # the rule has both sides
    assert len(imports) - len(training) > 50
    assert all(doors <= {dep for dep, _ in imports[m]} for m, doors in DOORS_INTO_TRAINING.items())  # still used
    assert _runtime_imports_of_training(imports) == {}
    # and it is the rule that says so: a runtime import of training, or the door going further, is caught
    assert _runtime_imports_of_training(
        imports
        | {
            "diffcli.run": {("diffcli.training.common", "Budget")},
            "diffcli.control": {("diffcli", "training")},
            "diffcli.distill.runner": {
                ("diffcli.training.distill.trainer", "train"),
                ("diffcli.training.distill", "lcm"),
            },
        }
    ) == {
        "diffcli.control": ["diffcli.training"],
        "diffcli.distill.runner": ["diffcli.training.distill.lcm"],
        "diffcli.run": ["diffcli.training.common"],
    }


def test_no_module_imports_another_modules_private_names():
    offenders = sorted(
        (m, f"{dep}.{name}")
        for m, deps in _imports().items()
        for dep, name in deps
        if name and name.startswith("_") and not name.startswith("__") and dep != m
    )
    assert offenders == []


def test_distill_student_and_trainer_do_not_import_each_other():
    imports = _imports()  # the trainer exports through the student: the student must not need the trainer
    assert "diffcli.distill.student" in {m for m, _ in imports["diffcli.training.distill.trainer"]}
    assert "diffcli.training.distill.trainer" not in _targets(imports["diffcli.distill.student"])


LOADERS = {"from_pretrained", "from_single_file", "load_lora_weights"}


def test_every_model_load_goes_through_diffcli_loading():
    """diffcli.loading keeps torch's default dtype whether a load succeeds or raises; a direct call of a
    library's loader elsewhere would not (docs/device.md)."""
    offenders = []
    for file in PACKAGE.rglob("*.py"):
        if file.name == "loading.py" and file.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LOADERS
                and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "loading")
            ):
                offenders.append(f"{file.relative_to(PACKAGE.parent)}:{node.lineno} {node.func.attr}")
    assert offenders == []


# ---------------------------------------------------------------- the import graph: no circles, nothing upward
# The front doors turn their input into Jobs and call the engine; nothing below imports them. Each may
# import only the doors named here (DESIGN.md's picture: cli/ starts batch, its launcher and the serve
# client/server; the launcher runs batch in each process; batch and serve/ stand on the engine alone).
FRONT_DOORS = {
    "diffcli.__main__": {"diffcli.cli"},
    "diffcli.cli": {"diffcli.batch", "diffcli.launch", "diffcli.serve", "diffcli.mcp_server"},
    "diffcli.launch": {"diffcli.batch"},
    "diffcli.batch": set(),
    "diffcli.serve": set(),
    "diffcli.mcp_server": {"diffcli.serve"},  # `diffcli mcp` sends its jobs to a running server's client
}
# models/ (names -> local files) sits below the engine: besides itself it may import only these leaves
MODELS_MAY_IMPORT = {
    "diffcli.errors",
    "diffcli.paths",
    "diffcli.text",
    "diffcli.loading",
    "diffcli.limits",
    "diffcli.bundled",
    "diffcli.families",  # what each model family is, as data: itself a leaf (test below)
}


def _graph() -> dict[str, dict[str, set[str]]]:
    """module -> {module it imports: the names it takes}, for every module of the package.

    Every import counts, those inside functions included (they decide the order modules need each other
    in as much as the top-level ones do). `from diffcli.a import b` where b is a submodule imports
    diffcli.a.b; where b is a name, it imports diffcli.a itself (a package's __init__, its "face").
    Importing diffcli.a.b also runs diffcli/a/__init__.py, but that is Python's doing, not a choice of the
    importer, so it is no edge: a package face is a node like any other, with the edges of what it imports
    (a face that re-exports its submodules points at them). So a submodule that takes a name from its own
    package's face while the face imports that submodule (directly or not) is a circle, and is reported."""
    imports = _imports()
    graph: dict[str, dict[str, set[str]]] = {}
    for module, deps in imports.items():
        edges: dict[str, set[str]] = {}
        for dep, name in deps:
            target = f"{dep}.{name}" if name and f"{dep}.{name}" in imports else dep
            if target != module and target in imports:
                edges.setdefault(target, set()).add(name or "*")
        graph[module] = edges
    return graph


def _circles(graph) -> list[list[str]]:
    """The strongly connected sets of GRAPH with more than one module, each sorted (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1:
                    found.append(sorted(members))
    return sorted(found)


def _door(module: str) -> str | None:
    return next((d for d in FRONT_DOORS if module == d or module.startswith(d + ".")), None)


def test_the_import_graph_has_no_circles():
    """Each circle is reported as its modules and the imports that tie them (module -> module: names)."""
    graph = _graph()
    report = []
    for members in _circles(graph):
        ties = [
            f"  {a} -> {b}: {', '.join(sorted(graph[a][b]))}" for a in members for b in sorted(graph[a]) if b in members
        ]
        report.append(f"circle of {len(members)}: {', '.join(members)}\n" + "\n".join(ties))
    assert not report, "import circles:\n" + "\n".join(report)


def test_nothing_imports_a_front_door_from_below():
    upward = [
        f"{a} -> {b}: {', '.join(sorted(names))}"
        for a, edges in sorted(_graph().items())
        for b, names in sorted(edges.items())
        if _door(b) and _door(a) != _door(b) and _door(b) not in FRONT_DOORS.get(_door(a), set())
    ]
    assert not upward, "front doors imported from below:\n" + "\n".join(upward)


def test_models_import_only_models_and_leaves():
    """models/ turns names into local files; the engine and its features (control, pipelines, ...) use it."""
    upward = [
        f"{a} -> {b}: {', '.join(sorted(names))}"
        for a, edges in sorted(_graph().items())
        if a == "diffcli.models" or a.startswith("diffcli.models.")
        for b, names in sorted(edges.items())
        if not b.startswith("diffcli.models") and b not in MODELS_MAY_IMPORT
    ]
    assert not upward, "models/ importing upward:\n" + "\n".join(upward)


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = _graph()
    assert "diffcli.run" in graph["diffcli.cli.generate"]  # imported inside execute()
    assert graph["diffcli.cli.models"]  # and the package face's submodules are nodes of their own
    assert any(m.startswith("diffcli.bundled.") for m in graph["diffcli.bundled"])  # `from .vocab import …`


MAX_FUNCTION_LINES = 80  # a function's body, after its docstring


def _long_functions(limit: int = MAX_FUNCTION_LINES) -> list[str]:
    found = []
    for file in sorted(PACKAGE.rglob("*.py")):
        if "training" in file.relative_to(PACKAGE).parts:  # recipes are scripts; the rule is the runtime's
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                    body = body[1:]
                lines = node.end_lineno - body[0].lineno + 1
                if lines > limit:
                    found.append(f"{file.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {lines} lines")
    return found


def test_no_runtime_function_is_over_80_lines():
    assert _long_functions() == []
    assert _long_functions(limit=40)  # (the rule is evaluated: shorter limits find functions)


def test_families_is_a_leaf():
    """diffcli.families (what each model family is, as data) stands on nothing but itself and the errors
    module, so models/, device, the engine and the front doors may all ask it."""
    graph = _graph()
    inside = [m for m in graph if m == "diffcli.families" or m.startswith("diffcli.families.")]
    assert {"diffcli.families.spec", "diffcli.families.registry", "diffcli.families.flux"} <= set(inside)
    outside = [
        f"{a} -> {b}"
        for a in inside
        for b in graph[a]
        if not (b == "diffcli.families" or b.startswith("diffcli.families.")) and b != "diffcli.errors"
    ]
    assert outside == []
