"""Memory model of the dense and the sharded analytic paths (bytes), for planning runs.

Dense path (ntkngd.analytic_kernels + the operators of gd, exact, BD, BTD, K-FAC + fixed
points, one host), s bytes per number, N training and N' test points, L layers:
    kernels      (3L + 1)(N^2 + N N') s     blocks, forward, backward kernels and the NNGP
    factors      (L + 2) N^2 s              per-layer Cholesky factors, the total NTK and its
                                            factor (cached per Kernels)
A lower bound of the peak: the fixed points' Schur decompositions and K-FAC's N' x N products
come on top.

Sharded path, per device (P devices, b = Np / P rows each, Np = N rounded up to a multiple of
P; storage s_st, compute s_c bytes):
    kernels      (2L - 1) b (Np + N') s_st  Q_l (L), B_l (L - 1: B_L = 1 is not stored), train
                                            and test, rows only
    one method family at a time (the runner drops each family's factors before the next):
    gd / exact   b (2 Np + N') s_c + C      the total NTK (train, test) and its factor
    BD / BTD     (L + 1) b Np s_c + C       one factor per layer and the block being factored
    K-FAC        b Np s_c + 6 b N' s_c + C  one factor, G'^T, the two solved N x N' parts and
                                            the substitution's work arrays
    C = 2 b Np s_c + Np b s_c               the Cholesky's working copy and gathered panel
and per process, while the kernels are computed, neural-tangents' ~30 float64 arrays of one tile
(kernels.TILE_ENTRIES entries: ~0.25 GB), and JAX's own ~0.3 GB (not modelled).
Nothing scales with N^2 on one device: every term has a factor b = Np / P.
"""
from __future__ import annotations

import math


def dense_bytes(n: int, n_test: int, depth: int = 3, itemsize: int = 8) -> float:
    """Dense path estimate (module docstring)."""
    return itemsize * ((3 * depth + 1) * (n * n + n * n_test) + (depth + 2) * n * n)


def sharded_bytes(n: int, n_test: int, depth: int = 3, devices: int = 1,
                  storage_itemsize: int = 8, compute_itemsize: int = 8) -> dict:
    """Per-device estimate of the sharded path (module docstring): kernels, each family's
    working set and the peak (kernels + the largest family)."""
    npad = math.ceil(n / devices) * devices
    b = npad // devices
    sc = compute_itemsize
    chol = 2 * b * npad * sc + npad * b * sc
    fam = {"gd/exact": b * (2 * npad + n_test) * sc + chol,
           "bd/btd": (depth + 1) * b * npad * sc + chol,
           "kfac": b * npad * sc + 6 * b * n_test * sc + chol}
    kernels = (2 * depth - 1) * b * (npad + n_test) * storage_itemsize
    tiles = 30 * 8 * 1_000_000 / devices          # per process, spread here over its devices
    return {"kernels": kernels, **fam, "peak": kernels + max(tiles, *fam.values())}


def report(n: int, n_test: int, depth: int = 3, devices: int = 1, storage_itemsize: int = 8,
           compute_itemsize: int = 8) -> str:
    """One line: sharded peak per device and in total against the dense estimate (GB)."""
    s = sharded_bytes(n, n_test, depth, devices, storage_itemsize, compute_itemsize)
    d = dense_bytes(n, n_test, depth)
    return (f"N = {n}, N' = {n_test}, L = {depth}, {devices} device(s), storage "
            f"{8 * storage_itemsize}-bit, compute {8 * compute_itemsize}-bit: sharded peak "
            f"{s['peak'] / 1e9:.2f} GB per device ({devices * s['peak'] / 1e9:.1f} GB in all), "
            f"dense estimate {d / 1e9:.1f} GB on one host")
