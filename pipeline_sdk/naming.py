"""A run's identity when the caller does not give it: from the environment, else made up.

Each of ``pipeline``, ``step`` and ``run_id`` comes from the argument, else from the
``MLOBS_*`` variable the chart injects, else a default: the script's name, ``"main"`` and a
generated id.  In a notebook's kernel the default pipeline is the notebook's name (from VS
Code's ``__vsc_ipynb_file__`` or ipykernel's ``__session__`` global, else Jupyter's
``JPY_SESSION_NAME``), else ``notebook``.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
from collections.abc import Callable

from . import config
from . import contract as c
from .validation import check_identity

_KERNEL_LAUNCHERS = frozenset({"ipykernel_launcher", "colab_kernel_launcher"})  # argv[0] in a notebook


def new_run_id() -> str:
    """A sortable, readable run id that is also a valid Kubernetes label value."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def pick(arg: str, given: str | None, env: config.EnvVar[str], default: Callable[[], str]) -> str:
    """``given`` (checked), else ``env``'s value (checked, naming the variable), else ``default()``."""
    if given is not None:
        return check_identity(arg, given)
    from_env = env.get()
    if from_env is not None:
        return check_identity(f"{arg} (from {env.name})", from_env)
    return default()


def default_pipeline() -> str:
    """The script's name; in a notebook's kernel the notebook's name; else ``notebook``."""
    argv0 = sys.argv[0] if sys.argv else ""
    if not argv0 or _stem(argv0) in _KERNEL_LAUNCHERS:
        return _name_of(_notebook_path()) or "notebook"
    return _name_of(argv0) or "notebook"


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _notebook_path() -> str:
    """The notebook a kernel runs, as VS Code, ipykernel or Jupyter name it; "" when none does."""
    main = sys.modules.get("__main__")
    user_ns = vars(main) if main is not None else {}
    for path in (
        user_ns.get(c.VSCODE_NOTEBOOK_GLOBAL),
        user_ns.get(c.JUPYTER_SESSION_GLOBAL),
        os.environ.get(c.JUPYTER_SESSION_VAR),
    ):
        if isinstance(path, str) and path.strip():
            return path
    return ""


def _name_of(path: str) -> str:
    """A file's stem as a pipeline name (a Kubernetes label value); "" if nothing of it is usable."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", _stem(path)).strip("-_.")
    return stem[:63].strip("-_.")
