"""The constants of CorDA's inverse-depth encoding (method.md §2.2), the one home below the readers that
encode it (:mod:`corda.data.codecs`) and the files that store it (:mod:`corda.h5io`).

t = INV_NUMERATOR / (z + INV_EPS_M) for metric depth z in metres, z clipped to [MIN_VALID_M, MAX_DEPTH_M];
t == INVALID (1.0) marks a pixel without depth, and every valid t is above it.
"""

INVALID = 1.0
INV_NUMERATOR = 655.36
INV_EPS_M = 0.01
MIN_VALID_M = 0.1
MAX_DEPTH_M = 655.35
