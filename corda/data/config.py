"""The data stage's config: params.yaml ``data``, which datasets to read (or the procedural benchmark to render).

``data.source`` and ``data.target`` name a dataset kind and its root folder; ``procedural`` renders the
embedded benchmark (:mod:`corda.data.procedural.benchmark`) into ``data/benchmark/``. The manifest built from
this config is :func:`corda.data.build.build_manifest`'s.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from corda.config import field
from corda.data.procedural.benchmark import BenchmarkConfig
from corda.errors import ConfigError
from corda.paths import BENCHMARK_DIR


@dataclasses.dataclass(frozen=True, slots=True)
class SourceSpec:
    kind: Literal["procedural", "synthia", "gta5"] = "procedural"
    root: str = str(BENCHMARK_DIR / "source")  # the dataset root for real data


@dataclasses.dataclass(frozen=True, slots=True)
class TargetSpec:
    kind: Literal["procedural", "cityscapes"] = "procedural"
    root: str = str(BENCHMARK_DIR / "target")


@dataclasses.dataclass(frozen=True, slots=True)
class DataConfig:
    # Every item is drawn from its own seeded generator, and the file check returns its findings in item order,
    # so the process count changes no file (run.data).
    RUN_KEYS: ClassVar[tuple[str, ...]] = ("workers",)

    seed: int = field(0, min=0)
    workers: int = field(2, min=1)  # processes: rendering the benchmark, checking the dataset files' headers
    validate_items: int = field(50, min=0)  # real data: open this many items per split to check formats
    source: SourceSpec = SourceSpec()
    target: TargetSpec = TargetSpec()
    procedural: BenchmarkConfig = BenchmarkConfig()


def check_kinds(cfg: DataConfig) -> None:
    """A procedural source goes with a procedural target and a real one with a real one (else a ConfigError).

    The rendered benchmark has its own ten classes and its own camera and scale; paired with a real dataset,
    no class set would be shared and the gap measured would not be the paper's (README).
    """
    if (cfg.source.kind == "procedural") != (cfg.target.kind == "procedural"):
        raise ConfigError("data.source.kind/data.target.kind: procedural source and target go together (the "
                          "rendered benchmark's ten classes match no real dataset's); set both to procedural "
                          "or both to real datasets")
