"""Import only the diffusers models a job uses.

diffusers' top-level package and `diffusers.models` are lazy (`_LazyModule`), but the sub-packages
`diffusers.models.transformers`, `.autoencoders`, `.unets`, `.controlnets` and `diffusers.hooks` import
every module they hold as soon as one of them is imported: loading a Stable Diffusion UNet imports
`unet_2d_blocks`, which imports `..transformers.transformer_2d`, which runs
`transformers/__init__.py` and imports 70-odd video, audio and DiT models (and, through them, peft and
diffusers' hooks). That is the largest single part of diffcli's cold start (bench/cold_start.py).

`install()` adds an import hook (a `sys.meta_path` finder, the mechanism importlib documents for
this) that, when diffusers imports one of these sub-packages, gives it a lazy package in the style of
diffusers' own `_LazyModule` instead of running its `__init__.py`: same name, file and search path, so
`import diffusers.models.unets.unet_2d_condition` works as before, and its public names (read from the
package's own `__init__.py`, its `from .module import Name` statements) import their module on first
use. What a program can reach is unchanged; only when each module is imported changes. Installing
costs nothing measurable; a sub-package imported before the hook is left as it is.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types
from pathlib import Path

PACKAGES = ("models.transformers", "models.autoencoders", "models.unets", "models.controlnets", "hooks")


class LazyPackage(types.ModuleType):
    """A package whose public names import their own module when first read."""

    def __init__(self, name: str, names: dict[str, str]):
        super().__init__(name)
        self._diffcli_names = names

    def __getattr__(self, attr: str):
        module = self._diffcli_names.get(attr)
        if module is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {attr!r}")
        value = getattr(importlib.import_module(f"{self.__name__}.{module}"), attr)
        setattr(self, attr, value)
        return value

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._diffcli_names))


def public_names(init_source: str) -> dict[str, str] | None:
    """{name: module} for each `from .module import name[, name…]` of a package's __init__.py, or None
    when it does anything else (defines, assigns, imports from elsewhere): such a package is imported
    the ordinary way. `if`/`try` blocks (diffusers' availability checks) are read through."""
    import ast

    names: dict[str, str] = {}

    def read(body) -> bool:
        for node in body:
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module and "." not in node.module:
                names.update((alias.asname or alias.name, node.module) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module == "utils":
                continue  # availability helpers (`from ...utils import is_torch_available`)
            elif isinstance(node, ast.If):
                if not (read(node.body) and read(node.orelse)):
                    return False
            elif isinstance(node, ast.Try):
                if not all(
                    read(part)
                    for part in (node.body, node.orelse, node.finalbody, *(handler.body for handler in node.handlers))
                ):
                    return False
            elif not (
                isinstance(node, (ast.Expr, ast.Pass)) and not isinstance(getattr(node, "value", None), ast.Call)
            ):
                return False  # anything but imports, docstrings and pass
        return True

    return names if read(ast.parse(init_source).body) else None


class _LazyLoader:
    """Loader of a LazyPackage: the real package's spec, with its __init__.py read instead of run."""

    def __init__(self, names: dict[str, str]):
        self.names = names

    def create_module(self, spec):
        return LazyPackage(spec.name, self.names)

    def exec_module(self, module) -> None:
        pass


class _Finder:
    """A meta-path finder for the sub-packages in PACKAGES: the path finder's spec, with _LazyLoader."""

    @staticmethod
    def find_spec(fullname: str, path=None, target=None):
        if fullname not in _NAMES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.origin is None or not spec.origin.endswith("__init__.py"):
            return None
        try:
            names = public_names(Path(spec.origin).read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            names = None
        if names is None:
            return None  # not a plain list of imports: the ordinary import
        spec.loader = _LazyLoader(names)
        return spec


_NAMES = frozenset(f"diffusers.{package}" for package in PACKAGES)


def install() -> None:
    """Add the import hook (see the module docstring) once per process."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
