"""vqa-pipe: two-stage offline blind video quality assessment.

``vqa_pipe.pipeline`` holds the building blocks (decoding, windows, models, the
feature store, regressors, metrics); ``vqa_pipe.stages`` holds one module per
pipeline stage; ``vqa_pipe.cli`` is the ``vqa-pipe`` command line.

In a source checkout, ``pipeline/`` and ``stages/`` sit beside ``vqa_pipe/`` and are bound
here to *this* checkout's folders, whatever an editable install elsewhere maps them to: code
imported from one clone never runs another clone's building blocks. An installed wheel has
them inside the package and needs no binding.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"

_CHECKOUT = Path(__file__).resolve().parent.parent
SUBPACKAGES = ("pipeline", "stages")


def _bind_checkout() -> None:
    if not (_CHECKOUT / "pyproject.toml").is_file():
        return  # installed as a wheel: vqa_pipe/pipeline and vqa_pipe/stages are inside
    for name in SUBPACKAGES:
        init = _CHECKOUT / name / "__init__.py"
        full = f"{__name__}.{name}"
        if not init.is_file() or full in sys.modules:
            continue
        spec = importlib.util.spec_from_file_location(
            full, init, submodule_search_locations=[str(init.parent)]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)
        setattr(sys.modules[__name__], name, module)


_bind_checkout()
