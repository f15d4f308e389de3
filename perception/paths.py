"""Where the bundled models (``engines/``), configurations (``configs/``) and the demo clip (``media/``) are found.

In a source checkout (and an editable install) they sit beside the ``perception`` package. A wheel
(``pip install .``) installs copies under ``<prefix>/share/perception`` (``[tool.setuptools.data-files]``
in ``pyproject.toml``), since a package folder in ``site-packages`` has no repository beside it.
``$PERCEPTION_DATA`` overrides both: a folder with ``engines/`` and ``configs/`` of your own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["DATA_ROOT", "bundled", "data_root"]

_ENV = "PERCEPTION_DATA"


def data_root(
    *, environ: dict[str, str] | None = None, package_dir: Path | None = None, prefix: str | None = None
) -> Path:
    """The folder holding ``engines/`` and ``configs/``.

    Order: ``$PERCEPTION_DATA`` (when set and non-empty); the checkout the package runs from (the
    parent of ``package_dir``, when it has ``engines/`` and ``pyproject.toml``); ``<prefix>/share/perception`` when a
    wheel installed it there; else the checkout path, so that a missing model's error names where it
    was looked for. The keywords exist for tests (defaults: ``os.environ``, this package, ``sys.prefix``).
    """
    env = os.environ if environ is None else environ
    if env.get(_ENV):
        return Path(env[_ENV]).expanduser()
    checkout = (package_dir or Path(__file__).resolve().parent).parent
    if (checkout / "engines").is_dir() and (checkout / "pyproject.toml").is_file():  # not site-packages
        return checkout
    installed = Path(sys.prefix if prefix is None else prefix) / "share" / "perception"
    if (installed / "engines").is_dir():
        return installed
    return checkout


DATA_ROOT = data_root()


def bundled(path: str, *, root: Path | None = None) -> str:
    """``path`` unchanged, unless it is relative, absent from the working directory and present under the
    data root (``media/solidWhiteRight.mp4`` of the default configuration, run from anywhere): then that
    file's absolute path. Anything that is not a plain relative file name (URLs, ``camera:0``,
    ``synthetic:...``) is returned as is."""
    p = Path(path)
    if not path or p.is_absolute() or ":" in path or p.exists():
        return path
    candidate = (DATA_ROOT if root is None else root) / p
    return str(candidate) if candidate.exists() else path
