"""dvc.yaml's code deps cannot drift from the code: every repository module a stage's command can import is
covered by one of that stage's deps (the file itself or a folder above it).

The import closure is computed statically with :mod:`ast`, starting from the module of the stage's
``python -m stages.<name>`` (or ``torchrun ... -m stages.<name>``) command. It follows module-level and
function-level imports, relative imports, ``from corda.x import y`` where ``y`` is itself a submodule, and the
package ``__init__.py`` files that importing a submodule executes. It over-approximates (an import under
``if TYPE_CHECKING`` counts too), which is the safe side for a dependency list.
"""

from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stages", "corda")  # the repository's own top-level packages


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file that defines module ``name`` within the repository (a ``.py`` or a package ``__init__``)."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _package_of(path: Path, root: Path) -> str:
    """The dotted package a file belongs to (``corda/data/x.py`` -> ``corda.data``; a package's
    ``__init__.py`` is its own package)."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1])


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every module name an import statement anywhere in ``path`` may load (absolute, dotted)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _package_of(path, root)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            # `from corda.data import codecs`: the name may be a submodule rather than an attribute.
            names.update(f"{base}.{a.name}" for a in node.names if a.name != "*")
    return {n for n in names if n}


def closure(module: str, root: Path = ROOT) -> set[str]:
    """Repository files (relative POSIX paths) that ``python -m module`` may execute."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        for i in range(1, len(parts) + 1):
            f = module_file(".".join(parts[:i]), root)
            if f is None or f in seen:
                continue
            seen.add(f)
            todo.extend(imported_modules(f, root))
    return {p.relative_to(root).as_posix() for p in seen}


def stage_modules(cmd: str | list[str]) -> list[str]:
    """The ``-m`` modules a stage command runs (``python -m stages.x``, ``torchrun ... -m stages.x``)."""
    cmds = cmd if isinstance(cmd, list) else [cmd]
    mods = []
    for c in cmds:
        argv = shlex.split(c)
        mods += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-m"]
    return mods


def _expand(name: str, stage: dict) -> dict[str, dict]:
    """``foreach``/``matrix`` stages become one stage per item, the way DVC names them (``train@dacs``).

    Only ``${item}``/``${item.key}``/``${key}`` are substituted: enough for commands and deps; a dep
    templated on anything else is reported by the test rather than guessed.
    """
    if "foreach" in stage:
        items = stage["foreach"]
        pairs = items.items() if isinstance(items, dict) else [(str(i), i) for i in items]
        body = stage["do"]
        out = {}
        for key, item in pairs:
            def sub(s, key=key, item=item):
                s = s.replace("${key}", str(key))
                if isinstance(item, dict):
                    for k, v in item.items():
                        s = s.replace("${item.%s}" % k, str(v))
                return s.replace("${item}", str(item))
            out[f"{name}@{key}"] = _substitute(body, sub)
        return out
    if "matrix" in stage:
        combos: list[dict] = [{}]
        for k, vals in stage["matrix"].items():
            combos = [{**c, k: v} for c in combos for v in vals]
        out = {}
        for combo in combos:
            def sub(s, combo=combo):
                for k, v in combo.items():
                    s = s.replace("${item.%s}" % k, str(v))
                return s
            out[f"{name}@{'-'.join(str(v) for v in combo.values())}"] = _substitute(stage, sub, skip="matrix")
        return out
    return {name: stage}


def _substitute(obj, sub, skip=None):
    if isinstance(obj, str):
        return sub(obj)
    if isinstance(obj, list):
        return [_substitute(x, sub) for x in obj]
    if isinstance(obj, dict):
        return {k: _substitute(v, sub) for k, v in obj.items() if k != skip}
    return obj


def dvc_stages(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, dict]:
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out: dict[str, dict] = {}
    for name, stage in stages.items():
        out.update(_expand(name, stage))
    return out


def declared_params(stage: dict) -> list[str]:
    """The params.yaml keys and sections a stage declares: plain entries, and the lists of
    ``params.yaml: [keys]`` entries (dvc.yaml writes shared key lists once, as YAML anchors)."""
    out = []
    for p in stage.get("params", []):
        if isinstance(p, str):
            out.append(p)
        else:
            for file, keys in p.items():
                assert file == "params.yaml", f"params from another file ({file}); extend this helper"
                out += keys
    return out


def _dep_paths(stage: dict) -> list[str]:
    return [next(iter(d)) if isinstance(d, dict) else d for d in stage.get("deps", [])]


def uncovered(files: set[str], deps: list[str]) -> set[str]:
    """The files no dep covers (a dep covers itself and, as a folder, everything below it)."""
    deps = [d.rstrip("/") for d in deps]
    return {f for f in files if not any(f == d or f.startswith(d + "/") for d in deps)}


STAGES = dvc_stages()


def test_every_stage_runs_a_repository_module():
    for name, stage in STAGES.items():
        mods = stage_modules(stage["cmd"])
        assert mods, f"{name}: no `-m <module>` in its cmd; teach this test how the stage starts"
        for m in mods:
            assert module_file(m), f"{name}: {m} is not a module of this repository"


def test_every_command_runs_the_project_interpreter():
    """Not the caller's `python` (the first on PATH, maybe the system's): DVC deletes a stage's outputs before
    it runs the command, so a wrong interpreter would fail only after that (issue 31)."""
    for name, stage in STAGES.items():
        cmds = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
        assert all(shlex.split(c)[:2] == [".venv/bin/python", "-m"] for c in cmds), (name, cmds)


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_its_import_closure(name):
    stage = STAGES[name]
    files = set().union(*(closure(m) for m in stage_modules(stage["cmd"])))
    missing = uncovered(files, _dep_paths(stage))
    assert not missing, f"dvc.yaml stage {name} imports these files but does not list them in deps: {sorted(missing)}"


# The closure computation itself, on a small made-up package tree.

def test_closure_follows_every_import_form(tmp_path):
    files = {
        "stages/__init__.py": "",
        "stages/s.py": "from stages.common import x\n\ndef main():\n    from corda.data import codecs\n",
        "stages/common.py": "from . import helper\n",
        "stages/helper.py": "",
        "corda/__init__.py": "",
        "corda/data/__init__.py": "",
        "corda/data/codecs.py": "from ..errors import E\nimport corda.depth.step\n",
        "corda/data/unused.py": "",
        "corda/errors.py": "",
        "corda/depth/__init__.py": "",
        "corda/depth/step.py": "from .metrics import m\n",
        "corda/depth/metrics.py": "import numpy\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    got = closure("stages.s", tmp_path)
    assert got == set(files) - {"corda/data/unused.py"}
    assert uncovered(got, ["stages", "corda/data", "corda/errors.py", "corda/__init__.py"]) == {
        "corda/depth/__init__.py", "corda/depth/step.py", "corda/depth/metrics.py"}


def test_stage_modules_reads_python_and_torchrun_commands():
    assert stage_modules("python -m stages.train --method dacs") == ["stages.train"]
    assert stage_modules("torchrun --nproc-per-node 2 -m stages.depth_pretrain") == ["stages.depth_pretrain"]
    assert stage_modules(["python -m stages.a", "python -m stages.b"]) == ["stages.a", "stages.b"]


def test_matrix_and_foreach_expand_like_dvc():
    m = _expand("train", {"matrix": {"method": ["dacs", "oracle"]},
                          "cmd": "python -m stages.train --method ${item.method}",
                          "outs": ["models/${item.method}.pt"]})
    assert set(m) == {"train@dacs", "train@oracle"}
    assert m["train@oracle"]["outs"] == ["models/oracle.pt"]
    f = _expand("gen", {"foreach": ["a", "b"], "do": {"cmd": "python -m stages.x ${item}"}})
    assert f["gen@b"]["cmd"] == "python -m stages.x b"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_lists_no_code_it_does_not_import(name):
    """A stale code dep re-runs the stage for edits that cannot change its outputs."""
    stage = STAGES[name]
    files = set().union(*(closure(m) for m in stage_modules(stage["cmd"])))
    code = [d for d in _dep_paths(stage) if d.split("/")[0] in PACKAGES]
    stale = [d for d in code if not any(f == d or f.startswith(d.rstrip("/") + "/") for f in files)]
    assert not stale, f"dvc.yaml stage {name} lists code it never imports: {stale}"


@pytest.mark.parametrize("name", ["depth_pretrain", "depth_maps"])
def test_depth_stages_do_not_reach_segmentation_code(name):
    """Editing the segmentation run loop, its step, the UDA blocks or the segmentation network must not
    re-run depth pretraining (the depth stages share only neutral modules: device, colour, engine...)."""
    files = closure(stage_modules(STAGES[name]["cmd"])[0])
    seg = {"corda/seg/run.py", "corda/seg/step.py", "corda/uda.py", "corda/models/corda_net.py",
           "corda/losses/segmentation.py"}
    assert not files & seg, sorted(files & seg)
