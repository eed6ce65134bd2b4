"""exp, log, sin, cos and tan from IEEE-754 basic arithmetic only: the same bits on every CPU.

numpy's transcendental ufuncs (``np.exp``, ``np.power``, ``np.sin``, ...) are dispatched by CPU feature
level (baseline SSE, AVX2, AVX-512) and the implementations differ in the last bits; libm's (``math.*``)
differ between library versions and FMA variants. A renderer that feeds their results into pixel values
therefore writes other bytes on another CPU (issue 18). The functions here use only ``+ - * /``,
``floor``, ``frexp`` and ``ldexp`` on float64, in a fixed order (Horner's scheme): IEEE-754 rounds each of
those exactly, whatever the vector width, so the results are bit-identical on any IEEE-754 machine. numpy
never fuses a separate multiply and add into an FMA, so the order written is the order computed.

Accuracy is a few ulp of float64 (relative error < 1e-15 on the ranges used), far below the float32 and
uint8 resolution of the renderer; these are not correctly rounded, only reproducible.
"""

from __future__ import annotations

import math

import numpy as np

# Cody–Waite split of ln 2 and π/2: the high parts have trailing zero bits, so k·HI is exact for |k| < 2^20.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
_PIO2_HI = 1.57079632673412561417e00
_PIO2_LO = 6.07710050650619224932e-11
_INV_PIO2 = 6.36619772367581382433e-01
_SQRT_HALF = 0.70710678118654752440

# Taylor coefficients 1/n!: an exact integer factorial and one correctly rounded division each.
_INV_FACT = [1.0 / math.factorial(n) for n in range(20)]


def _horner(x: np.ndarray, coeffs: list[float]) -> np.ndarray:
    """Σ coeffs[n]·x^n by Horner's scheme (a fixed sequence of IEEE multiplies and adds)."""
    acc = np.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = acc * x + c
    return acc


def exp(x) -> np.ndarray:
    """e^x (float64 array) for |x| < 700: x = k·ln2 + r, |r| ≤ ln2/2, then a degree-15 Taylor polynomial."""
    x = np.asarray(x, dtype=np.float64)
    k = np.floor(x * _INV_LN2 + 0.5)
    r = (x - k * _LN2_HI) - k * _LN2_LO
    return np.ldexp(_horner(r, _INV_FACT[:16]), k.astype(np.int32))


def log(x) -> np.ndarray:
    """Natural log (float64 array) of x > 0: x = m·2^e with m in [√½, √2), log m = 2·atanh((m−1)/(m+1))."""
    x = np.asarray(x, dtype=np.float64)
    m, e = np.frexp(x)
    low = m < _SQRT_HALF
    m = np.where(low, m * 2.0, m)
    e = (e - low).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)  # |s| ≤ 0.1716, so s^24/25 < 1e-19
    series = _horner(s * s, [1.0 / (2 * n + 1) for n in range(12)])
    return (e * _LN2_HI + 2.0 * s * series) + e * _LN2_LO


def sin_cos(x) -> tuple[np.ndarray, np.ndarray]:
    """(sin x, cos x) as float64 arrays for |x| < 1e5: quadrant reduction by π/2, then Taylor series."""
    x = np.asarray(x, dtype=np.float64)
    k = np.floor(x * _INV_PIO2 + 0.5)
    r = (x - k * _PIO2_HI) - k * _PIO2_LO  # |r| ≤ π/4
    r2 = r * r
    s = r * _horner(r2, [(-1) ** n * _INV_FACT[2 * n + 1] for n in range(9)])
    c = _horner(r2, [(-1) ** n * _INV_FACT[2 * n] for n in range(10)])
    q = np.mod(k, 4.0)  # exact for integral k
    sin = np.select([q == 0, q == 1, q == 2], [s, c, -s], -c)
    cos = np.select([q == 0, q == 1, q == 2], [c, -s, -c], s)
    return sin, cos


def tan(x) -> np.ndarray:
    """tan x = sin x / cos x (float64 array)."""
    s, c = sin_cos(x)
    return s / c


def power(x, y: float) -> np.ndarray:
    """x^y = e^(y·log x) (float64 array) for x > 0."""
    return exp(y * log(x))
