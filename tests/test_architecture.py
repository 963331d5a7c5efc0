"""The shape the design asks for, checked on the source: the runtime never imports training recipes,
no module reaches into another's private names, and distill's student and trainer do not import
each other."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "diffcli"
TRAINING = {"diffcli.bundled.train", "diffcli.bundled.tiny_ae", "diffcli.upscale.train_latent",
            "diffcli.distill.trainer", "diffcli.bundled.train_control"}
# the `diffcli distill` command starts the trainer: it is the one runtime door into training
STARTS_TRAINING = {"diffcli.distill.runner"}


def _imports() -> dict[str, set[tuple[str, str | None]]]:
    """module -> {(imported module, imported name or None)}"""
    found: dict[str, set[tuple[str, str | None]]] = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        deps: set[tuple[str, str | None]] = set()
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("diffcli"):
                deps.update((node.module, alias.name) for alias in node.names)
            elif isinstance(node, ast.Import):
                deps.update((alias.name, None) for alias in node.names if alias.name.startswith("diffcli"))
        found[module] = deps
    return found


def _targets(deps) -> set[str]:
    return {m for m, _ in deps} | {f"{m}.{n}" for m, n in deps if n}


def test_the_runtime_never_imports_training_recipes():
    imports = _imports()
    offenders = {m: sorted(_targets(d) & TRAINING) for m, d in imports.items()
                 if m not in TRAINING | STARTS_TRAINING and _targets(d) & TRAINING}
    assert offenders == {}


def test_no_module_imports_another_modules_private_names():
    offenders = sorted((m, f"{dep}.{name}") for m, deps in _imports().items() for dep, name in deps
                       if name and name.startswith("_") and not name.startswith("__") and dep != m)
    assert offenders == []


def test_distill_student_and_trainer_do_not_import_each_other():
    imports = _imports()  # the trainer exports through the student: the student must not need the trainer
    assert "diffcli.distill.student" in {m for m, _ in imports["diffcli.distill.trainer"]}
    assert "diffcli.distill.trainer" not in _targets(imports["diffcli.distill.student"])


LOADERS = {"from_pretrained", "from_single_file", "load_lora_weights"}


def test_every_model_load_goes_through_diffcli_loading():
    """diffcli.loading keeps torch's default dtype whether a load succeeds or raises; a direct call of a
    library's loader elsewhere would not (docs/device.md)."""
    offenders = []
    for file in PACKAGE.rglob("*.py"):
        if file.name == "loading.py" and file.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LOADERS \
                    and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "loading"):
                offenders.append(f"{file.relative_to(PACKAGE.parent)}:{node.lineno} {node.func.attr}")
    assert offenders == []
