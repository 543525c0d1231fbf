"""Your own data sets and models everywhere: the modules named in ``$POISONDIFF_PLUGINS`` are imported with the package.

`register_dataset` and `register_model` last as long as their process. A notebook kernel started by papermill or
``poisondiff tutorial``, the ``poisondiff`` command and Dask workers are other processes: put the registrations in a
module on the Python path and name it in the environment, comma-separated, and every such process registers them::

    # myplugins.py
    import poisondiff_lite as pdl
    pdl.register_dataset("mnist3", load_mnist3)        # a loader f(root, download=False) -> DataBundle
    pdl.register_model("lenet", lenet_factory)           # factory(num_classes) -> (body, head)

    $ export POISONDIFF_PLUGINS=myplugins
    $ poisondiff epa --dataset mnist3
    $ papermill notebooks/02_epa.ipynb out.ipynb -p DATASET mnist3 -p MODEL lenet
"""

from __future__ import annotations

import importlib
import os

from .errors import InvalidChoiceError

ENV = "POISONDIFF_PLUGINS"


def plugin_names(text: str | None = None) -> list[str]:
    """The module names in `text` (default: ``$POISONDIFF_PLUGINS``), comma-separated, blanks ignored."""
    text = os.environ.get(ENV, "") if text is None else text
    return [name.strip() for name in text.split(",") if name.strip()]


def load_plugins(text: str | None = None) -> list[str]:
    """Import each plugin module once (a module already imported is not run again); return their names."""
    names = plugin_names(text)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any failure inside the user's module: name it, and the fix
            raise InvalidChoiceError(
                f"${ENV} names the module {name!r}, which failed to import ({type(exc).__name__}: {exc}). Fix: put "
                f"it on the Python path (PYTHONPATH, or pip install it), or remove it from ${ENV}"
            ) from exc
    return names
