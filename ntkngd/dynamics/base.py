"""The common base of the function-space operators and the jit core both members run on: for
outputs f and targets y, the step (or flow velocity) on the training and test points is
(G(f) x, G'(f) x), x = H(f)^+ r(f, y) (`ntkngd.losses`); the linear flow (`linear.Operator`, MSE)
has closed forms in `predict`, the loss flow (`loss_flow.LossOperator`) is integrated by `flows`
through `core()`, the same equinox module for both."""
from __future__ import annotations

from typing import Any, Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp

from ..losses import Loss


def step_size(name: str, isotropic: bool, alpha: Callable[[], float],
              largest: Callable[[], float]) -> float:
    """The operators' learning rate: 1/alpha() where G is (nearly) isotropic, else 1/largest()
    = 1/lambda_max(G) (each callable is evaluated only on its branch)."""
    if isotropic:
        return 1.0 / alpha()
    lam = largest()
    if lam <= 0:
        raise ValueError(f"operator {name!r} has no positive eigenvalue; no learning rate")
    return 1.0 / lam


def hessian_rows(H: jnp.ndarray, a: jnp.ndarray) -> jnp.ndarray:
    """blockdiag_n(H_n) @ a for per-sample H (N, C, C) and a (N C, k) sample-major."""
    n, c, _ = H.shape
    return jnp.einsum("ncd,ndk->nck", H, a.reshape(n, c, -1)).reshape(n * c, -1)


def mul(a: jnp.ndarray, r: jnp.ndarray, kron: bool) -> jnp.ndarray:
    """Kernel-like matrix times residual r (N, C): a @ r for N x N factors (kron), else on the
    sample-major flattened vector."""
    if kron:
        return a @ r
    return (a @ r.reshape(-1)).reshape(-1, r.shape[-1])


class Core(eqx.Module):
    """The arrays and static structure an operator computes with (what jit sees).

    kind: "pinv" (G x with constant G, G'; the linear flow is the case H = I), "gd" (G r),
    "damped_exact" / "damped_pattern" (the damped solves with the output Hessian H(f))."""

    train: jnp.ndarray
    test: Optional[jnp.ndarray]
    pattern: Optional[jnp.ndarray]
    shift: jnp.ndarray
    kind: str = eqx.field(static=True)
    kron: bool = eqx.field(static=True)
    loss: Loss = eqx.field(static=True)

    def _linear(self, x):
        return mul(self.train, x, self.kron), \
            None if self.test is None else mul(self.test, x, self.kron)

    def __call__(self, f: jnp.ndarray, r: jnp.ndarray):
        """(G r, G' r) for a residual r in range(H) (H^+ r via `Loss.pinv_apply`)."""
        if self.kind == "pinv":
            return self._linear(self.loss.pinv_apply(f, r))
        return self._apply(f, r)

    def from_targets(self, f: jnp.ndarray, y: jnp.ndarray):
        """(G r, G' r) with r and H^+ r computed from the targets (exact for every probability)."""
        if self.kind == "pinv":
            return self._linear(self.loss.pinv_residual(f, y))
        return self._apply(f, self.loss.residual(f, y))

    def _apply(self, f, r):
        if self.kind == "gd":
            return self._linear(r)
        H = self.loss.hessian(f)
        c = r.shape[-1]
        one = self.kind == "damped_exact"   # exact NGD: one block (the total NTK), S = [[1]]
        train = self.train[None] if one else self.train
        test = None if self.test is None else (self.test[None] if one else self.test)
        S = jnp.ones((1, 1), train.dtype) if one else self.pattern
        L, m, _ = train.shape
        hb = jax.vmap(lambda b: hessian_rows(H, b))(train)
        big = jnp.einsum("ij,jab->iajb", S, hb).reshape(L * m, L * m)
        big = big + self.shift * jnp.eye(L * m, dtype=big.dtype)
        v = jnp.linalg.solve(big, jnp.tile(r.reshape(-1), L)).reshape(L, m)
        out = jnp.einsum("lab,lb->a", train, v).reshape(-1, c)
        return out, None if test is None else jnp.einsum("lab,lb->a", test, v).reshape(-1, c)


class FlowOperator:
    """Base of the operator family: `core()` (the jit core), `op(f, r)` and `op.from_targets(f, y)`.
    `linear`: whether the dynamics are linear with closed forms (the MSE member)."""

    linear = False

    def core(self) -> Core:   # pragma: no cover - every member defines it
        raise NotImplementedError

    def __call__(self, f: Any, r: Any):
        """(G(f) r, G'(f) r or None) for a residual r (N, C) in range(H)."""
        return self.core()(jnp.asarray(f), jnp.asarray(r))

    def from_targets(self, f: Any, y: Any):
        """(G(f) r, G'(f) r or None) with r and H^+ r computed exactly from the targets y."""
        return self.core().from_targets(jnp.asarray(f), jnp.asarray(y))
