"""Every command in README.md shows what the text says it shows (issue 19).

The README's commands (fenced ``bash`` blocks and inline code spans) are checked against the repository:
`dvc` commands parse with DVC's own argument parser and name real stages and params.yaml keys; `python -m
stages...` commands use options their typer command has; `make` targets, copied files and code paths
exist; artefact paths are outputs dvc.yaml declares. The cheap read-only commands run for real here
(`dvc metrics show` against the README's pasted output, `dvc params diff`, `dvc metrics diff`, the
`exp show` recipe within 80 columns, `python -m stages --help`). The stage list under "What re-runs" is
the dvc.yaml graph's downstream set of the stages that declare `train.lambda_depth`. The expensive ones
(`make repro`, `dvc repro`, `dvc exp run`, `dvc plots show`) are only parsed: tests/test_pipeline.py
runs the pipeline itself.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
sys.path.insert(0, str(ROOT / "tests"))
from test_dvc_deps import declared_params, dvc_stages  # noqa: E402

STAGES = dvc_stages(ROOT / "dvc.yaml")  # a matrix stage as DVC names its members: train@dacs
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
PRESETS = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "params").glob("*.yaml"))]
#: Folders whose files are pipeline artefacts (DVC outputs), not tracked source.
ARTEFACT_DIRS = ("data", "models", "depth", "pseudo", "metrics", "eval", "plots", "dvclive")
#: Folders of tracked files.
SOURCE_DIRS = ("corda", "stages", "tests", "benchmarks", "docs", "params", ".dvc")
#: Suffixes that make a dotted span a file name, not a params key.
FILE_SUFFIXES = ("json", "yaml", "py", "md", "png", "h5", "pt", "pth", "html", "tsv")
#: An experiment's row in `dvc exp show` (`└── <7-hex sha> [<name>]`) with a short `-n` name such as ld05.
EXP_ROW_WIDTH = 20


def _outside_fences(text: str) -> str:
    return re.sub(r"```.*?```", "", text, flags=re.S)


def code_blocks(lang: str) -> list[str]:
    return [body for fence_lang, body in re.findall(r"```(\w*)\n(.*?)```", README, re.S) if fence_lang == lang]


def code_spans() -> list[str]:
    """Inline code spans outside fences (a span may wrap onto the next line)."""
    return [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", _outside_fences(README)) if "\n\n" not in s]


def commands() -> list[str]:
    """Shell commands: the lines of the bash blocks (comments dropped) and the inline spans that are commands."""
    cmds = []
    for block in code_blocks("bash"):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line:
                cmds.append(line)
    cmds += [s for s in code_spans() if re.match(r"(dvc|python|make|cp|pip|torchrun|source) ", s) or s == "dvc"]
    return cmds


def _argv(cmd: str) -> list[str]:
    # Placeholders the text explains (<stage>, <name>) become real names.
    return shlex.split(cmd.replace("<stage>", "evaluate").replace("<name>", "evaluate"))


def _dotted_in(mapping: dict, dotted: str) -> bool:
    node = mapping
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _declared_outs() -> list[str]:
    outs = []
    for st in STAGES.values():
        for kind in ("outs", "metrics", "plots"):
            outs += [next(iter(o)) if isinstance(o, dict) else o for o in st.get(kind, [])]
    return outs


def _env() -> dict:
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "COLUMNS": "80", "PYTHONPATH": str(ROOT)}


def _run(argv: list[str]) -> str:
    if argv[0] == "dvc":
        argv = [sys.executable, "-m", "dvc", *argv[1:]]
    elif argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    res = subprocess.run(argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{argv}: exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_the_readme_has_commands():
    cmds = commands()
    assert any(c.startswith("dvc metrics show") for c in cmds) and any(c.startswith("make repro") for c in cmds)
    assert any(c.startswith("dvc exp show") for c in cmds) and any(c.startswith("python -m stages") for c in cmds)


@pytest.mark.parametrize("cmd", sorted({c for c in commands() if c.startswith("dvc ")}))
def test_dvc_commands_parse_and_name_real_stages_and_params(cmd):
    from dvc.cli.parser import get_main_parser

    argv = _argv(cmd)
    args = get_main_parser().parse_args(argv[1:])  # SystemExit on an unknown command or option
    for assignment in getattr(args, "set_param", None) or []:
        key = assignment.split("=", 1)[0]
        assert _dotted_in(PARAMS, key), f"{cmd}: {key} is not a params.yaml key"
    if getattr(args, "single_item", False) or argv[:2] == ["dvc", "repro"]:
        for target in getattr(args, "targets", None) or []:
            assert target in STAGES, f"{cmd}: {target} is not a dvc.yaml stage"


def _options(command) -> dict:
    return {o: p for p in command.params for o in list(getattr(p, "opts", [])) + list(getattr(p, "secondary_opts", []))
            if o.startswith("-")}


def _choices(param) -> list[str] | None:
    """The values an Enum- or Literal-typed option accepts (None for other types)."""
    import enum
    import typing

    ann = param.type_descriptor.annotation
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return [e.value for e in ann]
    if typing.get_origin(ann) is typing.Literal:
        return [str(a) for a in typing.get_args(ann)]
    return None


@pytest.mark.parametrize("cmd", sorted({c for c in commands() if c.startswith("python -m stages")}))
def test_stage_commands_use_real_options(cmd):
    import typer
    from typer.testing import CliRunner

    from stages.__main__ import app

    argv = _argv(cmd)
    module = argv[2]
    rest = argv[3:]
    group = typer.main.get_command(app)
    if module == "stages":
        if not rest or rest[0].startswith("-"):
            return  # `python -m stages --help`: runs in test_cheap_commands_run
        sub = [rest[0]]
        command, rest = group.commands[rest[0]], rest[1:]
    else:
        sub = [module.removeprefix("stages.")]
        command = group.commands[sub[0]]
    options = _options(command)
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok.startswith("--"):
            assert tok in options or tok == "--help", f"{cmd}: {tok} is not an option of {command.name}"
            param = options.get(tok)
            if param is not None and param.type_descriptor.annotation is not bool:
                choices = _choices(param)
                assert choices is None or rest[i + 1] in choices, f"{cmd}: {rest[i + 1]} is not one of {choices}"
                i += 1
        i += 1
    # Click's own parser: an unknown option fails before the eager --help would print.
    res = CliRunner().invoke(app, sub + rest + ["--help"])
    assert res.exit_code == 0, res.output


def test_predict_options_in_the_text_exist():
    """The predict section's option spans (`--teacher`, `--skip-bad`, ...) are options of predict."""
    import typer

    from stages.__main__ import app

    predict = typer.main.get_command(app).commands["predict"]
    options = set(_options(predict))
    start = README.index("### Using a trained model on your own images")
    section = README[start:README.index("\n### ", start + 1)]
    spans = re.findall(r"`(--[a-z0-9-]+)`", section)
    assert spans and set(spans) <= options, set(spans) - options


def test_make_targets_and_copied_files_exist():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    for cmd in commands():
        argv = _argv(cmd)
        if argv[0] == "make":
            # `make rehearsal REHEARSAL=all`: targets, and variables the Makefile reads
            assert {a for a in argv[1:] if "=" not in a} <= targets, f"{cmd}: Makefile targets are {sorted(targets)}"
            for var in (a.split("=")[0] for a in argv[1:] if "=" in a):
                assert f"$({var})" in makefile, f"{cmd}: the Makefile does not read {var}"
        if argv[0] == "cp":
            assert (ROOT / argv[1]).is_file(), cmd
        if argv[0] == "python" and argv[1].endswith(".py"):
            assert (ROOT / argv[1]).is_file(), cmd


def _path_spans() -> list[str]:
    spans = []
    for s in code_spans() + [tok for c in commands() for tok in _argv(c)]:
        for tok in s.split():
            tok = tok.strip("`'\",;()")
            tok = re.sub(r"\.(json|yaml):[\w.]+$", r".\1", tok)  # a DVC column name: <file>:<key>
            if re.match(rf"^({'|'.join(map(re.escape, ARTEFACT_DIRS + SOURCE_DIRS))})/", tok):
                spans.append(tok)
    return sorted(set(spans))


def _tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_paths_in_the_text_exist_or_are_declared_outputs():
    """Code and docs paths are tracked files or folders; artefact paths are (inside) outputs dvc.yaml declares."""
    tracked, outs = _tracked(), _declared_outs()
    folders = {str(Path(f).parent) for f in tracked} | {str(p) for f in tracked for p in Path(f).parents}
    for span in _path_spans():
        if "<" in span or "*" in span or "{" in span or "..." in span:
            span = re.split(r"[<*{]|\.\.\.", span)[0].rstrip("/")
        if not span or span in ARTEFACT_DIRS + SOURCE_DIRS:
            continue
        if span.split("/")[0] in ARTEFACT_DIRS:
            p = span.rstrip("/")
            assert any(p == o or p.startswith(o + "/") or o.startswith(p + "/") for o in outs), \
                f"{span}: not an output dvc.yaml declares"
        else:
            assert span.rstrip("/") in tracked or span.rstrip("/") in folders, f"{span}: not in the repository"


def test_params_keys_in_the_text_exist():
    """Every `section.key` span (also `section.key: value`) is a key of params.yaml or of a preset."""
    sections = set(PARAMS)
    checked = 0
    for span in code_spans():
        m = re.match(r"^([a-z_]+(?:\.[a-z0-9_]+)+)(?::\s.*)?$", span)
        if not m or m.group(1).split(".")[0] not in sections or m.group(1).rsplit(".", 1)[1] in FILE_SUFFIXES:
            continue
        key = m.group(1)
        assert any(_dotted_in(p, key) for p in [PARAMS, *PRESETS]), f"`{span}`: {key} is not a params key"
        checked += 1
    assert checked >= 20


def test_pipeline_table_lists_the_dvc_stages():
    table = README[README.index("| stage | what it does |"):]
    table = table[:table.index("\n\n")]
    named = set(re.findall(r"`([a-z_@]+)`", "\n".join(line.split("|")[1] for line in table.splitlines()[2:])))
    assert named == set(STAGES)


def _downstream(roots: set[str]) -> list[str]:
    """`roots` and every stage whose deps are (inside) an output of a stage already in the set, in dvc.yaml order."""
    outs = {name: [next(iter(o)) if isinstance(o, dict) else o for kind in ("outs", "metrics", "plots")
                   for o in st.get(kind, [])] for name, st in STAGES.items()}
    chosen = set(roots)
    changed = True
    while changed:
        changed = False
        for name, st in STAGES.items():
            if name in chosen:
                continue
            produced = [o for s in chosen for o in outs[s]]
            if any(d == o or d.startswith(o + "/") or o.startswith(d + "/") for d in st.get("deps", [])
                   for o in produced):
                chosen.add(name)
                changed = True
    return [n for n in STAGES if n in chosen]


def _declares(stage: dict, key: str) -> bool:
    section = key.split(".")[0]
    return any(p == key or p == section for p in declared_params(stage))


def test_what_reruns_after_lambda_depth_is_the_dags_downstream_set():
    declaring = {n for n, st in STAGES.items() if _declares(st, "train.lambda_depth")}
    expected = _downstream(declaring)
    text = README[README.index("<!-- RERUN lambda_depth"):]
    text = text[text.index("-->") + 3:].strip().splitlines()[0]
    assert re.findall(r"`([a-z_@]+)`", text) == expected, f"README: {text}; dvc.yaml: {expected}"
    para = README[README.index("`dvc status` (and `dvc repro --dry`) lists only"):]
    listed = set(re.findall(r"`([a-z_@]+)`", para[:para.index("\n\n")]))
    assert declaring == listed & set(STAGES)
    assert declaring == {"train_corda", "self_train"}, declaring  # not the baselines, not the oracle


def test_cheap_commands_run():
    out = _run(["python", "-m", "stages", "--help"])
    from stages.__main__ import STAGES as INDEX

    for name in INDEX:
        assert name in out, name
    assert set(STAGES) - {"train@source_only", "train@dacs", "train_corda", "train_oracle"} <= set(INDEX)
    _run(["dvc", "params", "diff"])
    _run(["dvc", "metrics", "diff"])


def test_metrics_show_prints_what_the_readme_pastes():
    """`dvc metrics show` on the committed files: the README's block is its output, within 80 columns."""
    out = _run(["dvc", "metrics", "show"]).rstrip("\n")
    pasted = [b for b in code_blocks("text") if b.startswith("Path ")]
    assert len(pasted) == 1
    assert [line.rstrip() for line in out.splitlines()] == [line.rstrip() for line in pasted[0].splitlines()], (
        f"paste the current output into README.md:\n{out}")
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80


def test_exp_show_recipe_fits_80_columns():
    """The recipe shows the experiment, CorDA's mIoU and train.lambda_depth: three columns, 80 wide with an
    experiment row such as `└── 1a2b3c4 [ld05]`."""
    recipe = next(c for c in commands() if c.startswith("dvc exp show"))
    out = _run(_argv(recipe))
    lines = out.strip().splitlines()
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    assert header == ["Experiment", "metrics/top/corda.json:miou", "train.lambda_depth"], header
    exp_col = len(lines[1].split("|")[1])
    widest = max(len(line) for line in lines) - exp_col + max(exp_col, EXP_ROW_WIDTH + 2)
    assert widest <= 80, out
    assert all(re.fullmatch(r"\d\.\d+|-|!", line.split("|")[2].strip()) for line in lines[2:]), out


def test_option_spans_are_options_of_a_stage_or_a_benchmark_script():
    """A bare option in the text (`--teacher`, `--architecture daformer --mit b5`) is an option of a stage command
    or of a script under benchmarks/ (argparse)."""
    import typer

    from stages.__main__ import app

    group = typer.main.get_command(app)
    known = {o for c in group.commands.values() for o in _options(c)}
    for script in (ROOT / "benchmarks").glob("*.py"):
        known |= set(re.findall(r"[\"'](--[a-z0-9-]+)[\"']", script.read_text()))
    spans = [tok for s in code_spans() if s.startswith("--") for tok in s.split() if tok.startswith("--")]
    assert spans and set(spans) <= known, set(spans) - known
