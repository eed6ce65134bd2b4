"""The pipeline's stage commands as DVC resolves them (``foreach``/``matrix`` expanded, ``${...}`` filled in),
in dvc.yaml's order, for the benchmark scripts that run stages without ``dvc repro`` (byte_identity.py, cost.py).

dvc.yaml's commands name the project's interpreter (``.venv/bin/python``); a benchmark runs them in a folder
without that venv, so :func:`stage_commands` puts this interpreter in its place.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

VENV_PYTHON = ".venv/bin/python"


def stage_commands(repo: Path) -> list[tuple[str, str, list[str]]]:
    """(stage name as ``dvc stage list`` prints it, shell command, declared outs) of ``repo``'s dvc.yaml.

    ``repo`` need not be a git repository (a ``git archive`` export is not): DVC reads it without SCM.
    """
    from dvc.repo import Repo

    rows = []
    with Repo(str(repo), config={"core": {"no_scm": True}}) as dvc:
        for st in dvc.index.stages:
            cmd = st.cmd if isinstance(st.cmd, str) else " && ".join(st.cmd)
            if cmd.startswith(VENV_PYTHON + " "):
                cmd = shlex.quote(sys.executable) + cmd[len(VENV_PYTHON):]
            rows.append((st.name, cmd, [str(o.def_path) for o in st.outs]))
    return rows
