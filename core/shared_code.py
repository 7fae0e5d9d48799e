"""One compiled copy of each workflow module per worker process.

The sandbox imports a workflow's module afresh for every case it runs: the case gets its own
module, classes and functions, so no case sees another's module state. By default that import
also loads the module's *code objects* anew from bytecode every time, and a cached case keeps
them alive: measured with tracemalloc, ~50 KiB of the refund workflow's code per parked case,
plus the unmarshalling on every new or replayed case.

Code objects are immutable, so one copy serves every case: `share_code` installs a finder that
gives the named modules a loader whose `get_code` compiles (or reads the bytecode of) each
source file once per process and hands the same code object to every later import, the
sandbox's included. Executing a module still creates its own module dict, functions and
classes each time: the sandbox's isolation is unchanged. Nothing else is affected: other
modules are found by the usual path finder, and a module loaded some other way (a zip, an
extension) keeps its own loader.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Iterable, Sequence
from types import CodeType, ModuleType
from typing import ClassVar

__all__ = ["SharedCodeFinder", "SharedCodeLoader", "share_code", "shared_code_modules"]


class SharedCodeLoader(importlib.machinery.SourceFileLoader):
    """A source file loader that returns the same code object for a file on every import."""

    _codes: ClassVar[dict[str, CodeType]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def get_code(self, fullname: str) -> CodeType:
        code = self._codes.get(self.path)
        if code is not None:
            return code
        with self._lock:
            code = self._codes.get(self.path)
            if code is None:
                code = super().get_code(fullname)
                if code is None:  # pragma: no cover - a source loader always has code
                    raise ImportError(f"no code for {fullname}", name=fullname)
                self._codes[self.path] = code
        return code

    @classmethod
    def cached_paths(cls) -> list[str]:
        """The source files whose code this process holds one copy of."""
        return sorted(cls._codes)


class SharedCodeFinder(importlib.abc.MetaPathFinder):
    """Finds the named modules as the path finder does, loading them with `SharedCodeLoader`."""

    def __init__(self) -> None:
        self.modules: set[str] = set()

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not importlib.machinery.SourceFileLoader:
            return spec
        spec.loader = SharedCodeLoader(fullname, spec.loader.path)
        return spec


def shared_code_modules(module_names: Iterable[str]) -> set[str]:
    """`module_names` and every package above them (`workflows.refund.workflow` ->
    `workflows`, `workflows.refund`, `workflows.refund.workflow`)."""
    names: set[str] = set()
    for name in module_names:
        parts = name.split(".")
        names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return names


def share_code(module_names: Iterable[str]) -> SharedCodeFinder:
    """Load `module_names` (and their packages) with one code object per file from now on, in
    this process; idempotent, returns the installed finder."""
    finder = next((f for f in sys.meta_path if isinstance(f, SharedCodeFinder)), None)
    if finder is None:
        finder = SharedCodeFinder()
        sys.meta_path.insert(0, finder)
    finder.modules.update(shared_code_modules(module_names))
    return finder
