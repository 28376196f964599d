"""Unit-wise Fisher: one block per unit i of layer l (its incoming weights and bias).

Theta_{l,i} = D_i K_{l-1} D_i with D_i = diag(df/du_{l,i}(x_n)); Theta_{l,i} Theta_{l,i}^+ projects
onto the samples where unit i is active, so G is diagonal with entry n = number of active
(unit, layer) pairs. As M -> infinity: G = alpha I with
    alpha = gamma sum_{l < L} M_l / C + 1,
gamma = fraction of active units (1/2 ReLU, 1 erf). For C > 1 each hidden unit projects, per sample,
onto one direction in output space (isotropic at infinite width), hence the 1/C; the output layer
contributes exactly 1. Needs every K_{l-1} invertible on the active sets (first layer: N <= d).
On infinite-width kernels only this training operator exists (rho -> 0); the test operator needs the
finite-width per-unit kernels.
"""
from __future__ import annotations

import warnings

import numpy as np

from .._checks import TheoryConditionWarning
from ..function_space import Operator


def predicted_alpha(net) -> float:
    return float(net.gamma * sum(net.widths) / net.out_dim + 1.0)


def operator(K, damping: float = 0.0) -> Operator:
    net = K.network
    if damping != 0:
        raise ValueError("unit_wise on infinite-width kernels is the damping -> 0 limit only; "
                         "use finite-width (empirical) kernels for a damped unit-wise operator")
    n = K.n_train
    alpha = predicted_alpha(net)
    first_ok = np.linalg.matrix_rank(np.asarray(K.fwd_train[0], float)) == n
    conditions = {"N <= d (first-layer input Gram invertible)": bool(first_ok),
                  "infinite width (M -> infinity)": False}
    notes = [f"unit-wise from gamma = {net.gamma} and widths {net.widths}: G = alpha I holds only "
             "as M -> infinity; finite-width fluctuations ~ sqrt(M) are not modelled here",
             "no test operator on infinite-width kernels (needs per-unit finite-width kernels)"]
    if not first_ok:
        msg = ("unit-wise: the first-layer input Gram is singular (N > d): the operator is not "
               "diagonal at finite width; this infinite-width operator is then not justified")
        warnings.warn(msg, TheoryConditionWarning)
        notes.append(msg)
    return Operator("unit_wise", alpha * np.eye(K.fwd_train.shape[1]), None, alpha, 0.0,
                    K.out_dim, K.kron_outputs, conditions, tuple(notes))
