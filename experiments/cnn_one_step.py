"""One step of every NGD approximation on a wide CNN against channels, with what keeps the finite
network from its linearization (issue: NGD beyond MLPs).

Data: 0-vs-1 8 x 8 digits, the data module's default preprocessing (the authors': one global mean
and standard deviation, then unit-norm rows), +-0.5 targets, as (N, 8, 8, 1) images; N = 12.
Network: `ntkngd.cnn(C)`: two 3x3 SAME convolutions with ReLU, global average pooling, dense
readout (L = 3), NTK parameterization, no bias, float64, init seed 0. Per channel count C:
- exact, block-diagonal (BD) and block tri-diagonal (BTD) NGD, one undamped step at the paper's
  lr = 1/alpha (alpha measured from the finite-width operator: 1, L = 3, 1'T^+1 = 1): the fall of
  the training loss loss0 / loss1. Their finite-width operators are alpha I to round-off, so the
  linearized step lands on the targets and the residual after the step is all nonlinearity:
  ||f1 - y|| / ||f0 - y|| = fall^(-1/2). The relative step of each layer ||lr d_l|| / ||theta_l||.
- the condition numbers of the finite-width blocks Theta_l and of the NTK, and of the
  infinite-width blocks (neural-tangents, same inputs);
- KFC and channel-wise: measured alpha and deviation from isotropy, and the one-step fall at
  lr = 1/lambda_max (their operators are not isotropic; channel-wise with its default damping).
Then a least-squares fit log(fall) = a + b log(C) per method over the channel counts, and the C
at which it reaches 10x (an extrapolation). `--json PATH` writes every number (atomically).

Measured numbers and their reading: docs/theory.md, section 7 (wide-CNN one-step check).
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
import numpy as np  # noqa: E402

import ntkngd as ng  # noqa: E402
from ntkngd.engine import apply_update  # noqa: E402
from ntkngd.networks.empirical import kernels_and_outputs, outputs  # noqa: E402
from ntkngd.store import write_json  # noqa: E402

PATTERNS = ("exact", "block_diagonal", "block_tridiagonal")
LAYERWISE = ("kfac", "unit_wise")


def digit_images(n: int, seed: int = 0):
    """N 0-vs-1 digits as (N, 8, 8, 1) images and +-0.5 targets (authors' preprocessing)."""
    ds = ng.data.digits(n_train=n, n_test=10, classes=(0, 1), seed=seed)
    return ds.x_train.reshape(n, 8, 8, 1), ds.y_train


def _cond(blocks) -> list[float]:
    return [float(np.linalg.cond(np.asarray(b))) for b in blocks]


def _rel_steps(net, params, d, lr: float) -> list[float]:
    out = []
    for i in net.trainable:
        num = sum(float(np.sum(np.asarray(a) ** 2)) for a in d[i] if a is not None)
        den = sum(float(np.sum(np.asarray(a) ** 2)) for a in params[i] if a is not None)
        out.append(lr * np.sqrt(num / den))
    return out


def one_step(channels: int, n: int, methods=PATTERNS + LAYERWISE, seed: int = 0) -> dict:
    """Every number of the module docstring for one channel count."""
    x, y = digit_images(n)
    net = ng.cnn(channels)
    _, params = net.init_fn(jax.random.PRNGKey(seed), x.shape)
    t0 = time.perf_counter()
    K, f = kernels_and_outputs(net, params, x)
    Ka = ng.analytic_kernels(net, x)
    loss0 = float(ng.losses.mse.value(np.asarray(f), y))
    out = dict(channels=channels, n=n, seed=seed, loss0=loss0,
               cond_finite=_cond(K.blocks_train) + _cond([K.ntk_train]),
               cond_infinite=_cond(Ka.blocks_train) + _cond([Ka.ntk_train]), methods={})
    for m in methods:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ng.TheoryConditionWarning)
            damping = None if m == "unit_wise" else 0.0
            op = ng.operator(m, K, damping)
            d = ng.ngd_direction(m, net, params, x, y, op.damping)
        f1 = outputs(net, apply_update(params, d, op.lr), x)
        loss1 = float(ng.losses.mse.value(np.asarray(f1), y))
        out["methods"][m] = dict(alpha=op.alpha, theory=op.alpha_theory, deviation=op.deviation,
                                 lr=op.lr, loss1=loss1, fall=out["loss0"] / loss1,
                                 rel_step=_rel_steps(net, params, d, op.lr))
    out["seconds"] = time.perf_counter() - t0
    return out


def fit_falls(rows: list[dict], method: str, target: float = 10.0) -> dict:
    """log(fall) = a + b log(C) by least squares; C at which the fit reaches `target`."""
    c = np.array([r["channels"] for r in rows], float)
    fall = np.array([r["methods"][method]["fall"] for r in rows])
    b, a = np.polyfit(np.log(c), np.log(fall), 1)
    reach = float(np.exp((np.log(target) - a) / b)) if b > 0 else float("inf")
    return dict(slope=float(b), intercept=float(a), channels_for_target=reach, target=target)


def _print_row(r: dict) -> None:
    cf = " ".join(f"{v:.2g}" for v in r["cond_finite"])
    ci = " ".join(f"{v:.2g}" for v in r["cond_infinite"])
    print(f"C = {r['channels']}: loss0 {r['loss0']:.4e}; cond(Theta_1..L, Theta) finite {cf}; "
          f"infinite {ci}; {r['seconds']:.0f} s")
    for m, v in r["methods"].items():
        th = "-" if v["theory"] is None else f"{v['theory']:.4g}"
        steps = " ".join(f"{s:.2e}" for s in v["rel_step"])
        print(f"  {m:>18} alpha {v['alpha']:>9.5g} (theory {th:>4}) deviation {v['deviation']:.2e} "
              f"loss1 {v['loss1']:.4e} fall {v['fall']:>7.3g}x  |lr d_l|/|theta_l| {steps}",
              flush=True)


def main(sweep: list[int], n: int, json_path: str | None) -> None:
    print(f"N = {n} digits (0 vs 1), authors' preprocessing, 8x8x1 images, ng.cnn(C): "
          "conv3x3-relu-conv3x3-relu-GAP-dense, float64, one step")
    rows = []
    for c in sorted(sweep):
        rows.append(one_step(c, n))
        _print_row(rows[-1])
    fits = {}
    if len(rows) >= 2:
        for m in PATTERNS:
            fits[m] = fit_falls(rows, m)
            print(f"fit {m}: fall ~ C^{fits[m]['slope']:.2f}; 10x at C ~ "
                  f"{fits[m]['channels_for_target']:.0f}")
    if json_path:
        write_json(json_path, dict(rows=rows, fits=fits))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sweep", type=str, default="128,256,512,1024", help="channel counts")
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--json", type=str, default=None)
    a = p.parse_args()
    main([int(s) for s in a.sweep.split(",") if s], a.n, a.json)
