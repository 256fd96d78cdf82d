"""Least-squares polynomials, coefficients highest degree first (as ``calibrations.Curve`` reads them)."""

from __future__ import annotations

from collections.abc import Sequence


class FitError(ValueError):
    """Points that do not determine the polynomial (too few, or all at one x)."""


def fit_poly(xs: Sequence[float], ys: Sequence[float], degree: int) -> list[float]:
    """The polynomial of ``degree`` closest to the points in the least-squares sense."""
    n = degree + 1
    if len(xs) != len(ys) or len(set(xs)) < n:
        raise FitError(f"a degree {degree} fit needs {n} or more distinct x values")
    # Normal equations A c = b, A[i][j] = sum x^(i+j), b[i] = sum y x^i, with c lowest degree first.
    a = [[sum(x ** (i + j) for x in xs) for j in range(n)] for i in range(n)]
    b = [sum(y * x**i for x, y in zip(xs, ys, strict=True)) for i in range(n)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-12:
            raise FitError("the points do not determine a curve")
        a[col], a[pivot] = a[pivot], a[col]
        b[col], b[pivot] = b[pivot], b[col]
        for row in range(n):
            if row != col:
                factor = a[row][col] / a[col][col]
                a[row] = [v - factor * p for v, p in zip(a[row], a[col], strict=True)]
                b[row] -= factor * b[col]
    return [b[i] / a[i][i] for i in reversed(range(n))]
