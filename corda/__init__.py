"""corda: a reproducible implementation of CorDA (Wang et al., ICCV 2021).

Domain-adaptive semantic segmentation with self-supervised depth estimation. The package is a
library: it never reads params.yaml or argv. The DVC stages in ``stages/`` load their params
section into the typed configs of :mod:`corda.config` and call into these modules.
"""

__version__ = "0.1.0"
