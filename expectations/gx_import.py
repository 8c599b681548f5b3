"""Import Great Expectations without the parts of its import that candleflow's suites never run.

`import great_expectations` imports every expectation it ships at once, and with them `scipy.stats` (for the
KL-divergence and KS-test expectations) and `altair` (for their charts): most of its import time (README,
Scale). Before that import, each of those modules is registered as a deferred module: an empty module object
with the real one's spec, which imports the real module the first time anyone reads one of its attributes. A
suite that uses one of those expectations still gets the real module, only later; a module already imported is
left as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

# Imported by great_expectations at import time, used only by expectations and renderers the OHLC suites don't use.
DEFERRED = ("scipy.stats", "altair")
_lock = threading.RLock()


class DeferredModule(types.ModuleType):
    """Stands in sys.modules for a module not imported yet; the first attribute read imports it."""

    def __getattr__(self, attr: str) -> Any:  # only called for attributes the stand-in lacks
        if attr.startswith("__") and attr.endswith("__") and attr != "__all__":
            raise AttributeError(attr)  # probes (copy, pickle, inspect) don't import it; `import *` does
        return getattr(self.load(), attr)

    def load(self) -> types.ModuleType:
        name = self.__name__
        with _lock:
            if sys.modules.get(name) is self:
                del sys.modules[name]
                try:
                    real = importlib.import_module(name)
                except BaseException:
                    sys.modules[name] = self
                    raise
                parent, _, child = name.rpartition(".")
                if parent in sys.modules:
                    setattr(sys.modules[parent], child, real)
                # whoever holds the stand-in from here on reads the real module's names directly
                self.__dict__.update({k: v for k, v in vars(real).items() if k not in ("__name__", "__spec__")})
            return sys.modules[name]


def defer(name: str) -> bool:
    """Register `name` as a deferred module; False when it is already imported (or not installed)."""
    with _lock:
        if name in sys.modules:
            return False
        spec = importlib.util.find_spec(name)  # imports the parent package (scipy itself is cheap)
        if spec is None:
            return False
        module = DeferredModule(name)
        module.__spec__ = spec
        module.__loader__ = spec.loader
        module.__file__ = spec.origin
        if spec.submodule_search_locations is not None:
            module.__path__ = list(spec.submodule_search_locations)
        sys.modules[name] = module
        return True


def import_great_expectations() -> types.ModuleType:
    """`great_expectations`, imported with DEFERRED deferred."""
    if "great_expectations" not in sys.modules:
        for name in DEFERRED:
            defer(name)
    import great_expectations

    return great_expectations
