"""Keep TensorFlow's start-up logging off stderr, so a command's output carries only this project's lines.

TensorFlow prints absl and oneDNN lines from C++ while it is imported, and ``TF_CPP_MIN_LOG_LEVEL``
does not stop them once another extension (NumPy, OpenCV) is loaded first. So `silence_tensorflow`
sets that variable and also installs an import hook that points file descriptor 2 at /dev/null for the
duration of the ``import tensorflow`` that happens later (if it happens: an exported model never needs
it), and raises the ``tensorflow`` Python logger to errors.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

VERBOSE_ENV = "CHESTXRAY_VERBOSE"  # set to 1 to keep TensorFlow's logging


def silence_tensorflow(verbose: bool = False) -> None:
    """Silence TensorFlow's start-up logging unless ``verbose`` or ``$CHESTXRAY_VERBOSE`` (not 0) asks for it.

    Call before TensorFlow is imported; harmless after. A ``TF_CPP_MIN_LOG_LEVEL`` already set is kept, but
    does not turn the import hook off (tf2onnx, for one, sets it for the whole process).
    """
    if verbose or os.environ.get(VERBOSE_ENV, "") not in ("", "0"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 (C++ logging included) at /dev/null inside the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` the usual way, then runs its module code with stderr silenced (once)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with stderr_silenced():
            self._loader.exec_module(module)
