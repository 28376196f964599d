"""K-FAC's factor solves: (gram + shift I)^+ [gram, test^T] for one Kronecker factor of a layer,
in whichever structured form is cheapest: the identity (undamped, positive definite), a thin basis
(features narrower than the gram, or a rank-deficient projector), the constant output-layer Gram
in closed form, or one dense solve. Rank cuts at the dtype's `linalg.rank_rtol`; jax.numpy.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve

from .. import linalg
from ..networks.empirical import expand_outputs as _expand
from . import _cache


def _eigh_solve(gram, shift, b):
    """(gram + shift I)^+ b by eigendecomposition with the rank cut; and the numerical rank."""
    w, u, keep = linalg.kept_spectrum(gram)
    inv = 1.0 / (w + shift) if shift > 0 else jnp.where(keep, 1.0 / jnp.where(keep, w, 1.0), 0.0)
    return u @ (inv[:, None] * (u.T @ b)), keep.sum()


def _ridge_solve(gram: jnp.ndarray, shift: float, b: jnp.ndarray, with_rank: bool = False):
    """(gram + shift I)^+ b for a symmetric PSD gram: Cholesky when gram + shift I is numerically
    positive definite (`linalg.factor_is_pd`), else eigh with the dtype's rank cut (lax.cond under
    jit). with_rank: also return the numerical rank (concrete arrays only)."""
    gram = linalg.symmetrized(gram)
    n = gram.shape[0]
    rtol = linalg.rank_rtol(gram.dtype)
    c = linalg.cholesky_symmetric(gram + shift * jnp.eye(n, dtype=gram.dtype))
    if any(isinstance(x, jax.core.Tracer) for x in (gram, b, shift)):
        if shift > 0:
            return cho_solve((c, True), b)
        return jax.lax.cond(linalg.factor_is_pd(c, rtol), lambda: cho_solve((c, True), b),
                            lambda: _eigh_solve(gram, 0.0, b)[0])
    out = (cho_solve((c, True), b), n) if bool(linalg.factor_is_pd(c, rtol)) else \
        _eigh_solve(gram, shift, b)
    return (out[0], int(out[1])) if with_rank else out[0]


class _TrainPart:
    """(gram + shift I)^+ gram without forming it where it has structure: the identity (a
    positive-definite gram, undamped), A A^T for a thin basis A (a projector U_k U_k^T when
    rank-deficient and undamped), or a dense matrix."""

    def __init__(self, dense=None, basis=None, size: int = 0):
        self.dense, self.basis, self.size = dense, basis, size

    @property
    def is_identity(self) -> bool:
        return self.dense is None and self.basis is None

    def diag(self) -> jnp.ndarray:
        return jnp.diagonal(self.dense) if self.basis is None else jnp.sum(self.basis ** 2, 1)

    def matrix(self, dtype) -> jnp.ndarray:
        if self.is_identity:
            return jnp.eye(self.size, dtype=dtype)
        return self.basis @ self.basis.T if self.basis is not None else self.dense


def _factor_terms(gram, shift, test, rank_deficient: bool = False, factor=None):
    """(gram + shift I)^+ [gram, test^T] as (`_TrainPart`, test part with rows for the left points,
    rank). Undamped and positive definite: the train part is I exactly; rank deficient (or known to
    be): the projector and U_k diag(1/w_k) U_k^T (one eigh); otherwise one solve. factor: (upper
    Cholesky factor, positive definite) when already computed (`_shared_factor`)."""
    n = gram.shape[0]
    if shift == 0 and not rank_deficient:
        rtol = linalg.rank_rtol(gram.dtype)
        if factor is None:
            pd, test_part = _pd_solve(gram, test, rtol)
        else:
            pd, test_part = factor[1], (None if test is None else _right_solve(factor[0], test))
        if bool(pd):
            return _TrainPart(size=n), test_part, n
    gram = linalg.symmetrized(gram)
    if shift == 0:
        w, u, keep = linalg.kept_spectrum(gram)   # ascending: the kept ones are the last r
        rank = int(keep.sum())
        uk, wk = u[:, n - rank:], w[n - rank:]
        test_part = None if test is None else ((test @ uk) / wk) @ uk.T
        return _TrainPart(basis=uk, size=n), test_part, rank
    rhs = gram if test is None else jnp.concatenate([gram, test.T], axis=1)
    sol, rank = _ridge_solve(gram, shift, rhs, with_rank=True)
    return _TrainPart(dense=sol[:, :n].T, size=n), (None if test is None else sol[:, n:].T), rank


@functools.partial(jax.jit, static_argnums=2)
def _pd_solve(gram, test, rtol: float):
    """(whether the symmetrized gram is numerically positive definite, test gram^{-1} or None) from
    one Cholesky factor, in one XLA computation (no layout copies of the factor)."""
    c = linalg.cholesky_symmetric(linalg.symmetrized(gram))
    test_part = None if test is None else cho_solve((c, True), test.T).T
    return linalg.factor_is_pd(c, rtol), test_part


@jax.jit
def _right_solve(u, test):
    """test (u^T u)^{-1} for an upper Cholesky factor u (`linalg.cholesky_upper`)."""
    return linalg.cho_solve_upper(u, test.T).T


def _constant_terms(g, n: int, shift: float, test):
    """`_factor_terms` for gram = g 1 1^T (N x N, g > 0: the output layer's backward kernel), in
    closed form: (gram + s I)^+ gram = a 1 1^T with a = g / (s + N g), and
    test (gram + s I)^+ = (test - a (test 1) 1^T) / s, or (test 1) 1^T / (N^2 g) when s = 0."""
    a = g / (shift + n * g)
    train = _TrainPart(basis=jnp.full((n, 1), jnp.sqrt(a), dtype=g.dtype), size=n)
    test_part = None
    if test is not None:
        total = test.sum(1, keepdims=True)
        test_part = (test - total * a) / shift if shift > 0 else \
            jnp.broadcast_to(total / (n * n * g), test.shape)
    return train, test_part, (n if shift > 0 else 1)


def feature_basis(ht, shift: float) -> tuple:
    """(V_k diag(w_k + shift)^(-1/2) or R^{-T} (p x k), k) for Ht^T Ht = V diag(w) V^T: the basis
    of `_feature_terms` (also the sharded backend's first K-FAC layer, ntkngd.sharded.kfac)."""
    p = ht.shape[1]
    small = linalg.symmetrized(ht.T @ ht)
    rtol = linalg.rank_rtol(small.dtype)
    rinv = linalg.lower_triangular_inverse(
        linalg.cholesky_symmetric(small + shift * jnp.eye(p, dtype=small.dtype)))
    finite = bool(jnp.all(jnp.isfinite(rinv)))
    if finite and (shift > 0 or bool(1.0 / jnp.sum(rinv ** 2) > rtol * jnp.trace(small))):
        return rinv.T, p
    w, v, keep = linalg.kept_spectrum(small)
    k = p if shift > 0 else int(keep.sum())
    return v[:, p - k:] / jnp.sqrt(w[p - k:] + shift), k


def _feature_terms(ht, ht_test, shift):
    """`_factor_terms` for gram = Ht Ht^T through the p x p Gram Ht^T Ht (p < N, same non-zero
    eigenvalues): A = Ht `feature_basis`, (gram + shift I)^+ gram = A A^T and test (gram + shift
    I)^+ = Ht' basis A^T (push-through). The Cholesky basis is used only when it certifies that the
    cut keeps every eigenvalue (lambda_min >= 1 / ||R^{-1}||_F^2 > rtol trace). Cost O(N p^2)."""
    n = ht.shape[0]
    basis, k = feature_basis(ht, shift)
    if ht_test is None:
        return _TrainPart(basis=ht @ basis, size=n), None, (n if shift > 0 else k)
    both = jnp.concatenate([ht, ht_test]) @ basis     # train and test rows in one product
    a = both[:n]
    return _TrainPart(basis=a, size=n), both[n:] @ a.T, (n if shift > 0 else k)


def _layer_features(K, l: int, side: str):
    """Features (train, test) of layer l's forward ("fwd": Ht_l, Q_l = Ht Ht^T) or backward
    ("bwd": D_l, DD^T) Gram, or (None, None) where K does not carry them (infinite width: only
    the first layer's inputs)."""
    train, test = (K.layer_inputs_train, K.layer_inputs_test) if side == "fwd" else \
        (K.backprops_train, K.backprops_test)
    if train is not None:     # one position: (N, 1, k) -> (N, k)
        flat = lambda a: a.reshape(a.shape[0], a.shape[-1])   # noqa: E731
        return flat(train[l]), (None if test is None else flat(test[l]))
    if side == "fwd" and l == 0:
        return K.first_inputs_train, K.first_inputs_test
    return None, None


def _shared_factor(K, l: int, gram):
    """The block methods' cached Cholesky factor of layer l's NTK block (`_cache.block_factors`,
    computed by BD/BTD) when that block is bit for bit this forward Gram: the output layer at
    infinite width, where Theta_L = Q_L * B_L with B_L = 1. None otherwise (nothing is computed)."""
    cached = _cache.peek(K, "chol_layers")
    if cached is None or l != K.depth - 1 or not K.kron_outputs:
        return None
    block = jnp.asarray(K.blocks_train[l])
    if block.shape != gram.shape or not bool(jnp.array_equal(block, gram)):
        return None
    return cached[0][l], bool(cached[1][l])


def _terms(gram, test, shift, feats, dtype, known_deficient: bool = False, factor=None):
    """(gram + shift I)^+ [gram, test^T] as (train part, test part, rank): in closed form for the
    constant output Gram (`_constant_terms`), through the features when they are narrower than
    the gram (then it is singular, and the p x p problem is cheaper: `_feature_terms`), else
    `_factor_terms` (with `factor`, a Cholesky factor already computed, if any)."""
    ht, ht_t = feats
    n = gram.shape[0]
    g0 = gram[0, 0]
    if bool(g0 > 0) and bool(jnp.all(gram == g0)):     # g 1 1^T: the output layer's B
        return _constant_terms(g0, n, shift, test)
    if ht is not None and ht.shape[0] == n and ht.shape[1] < n and \
            (test is None) == (ht_t is None):
        as_dtype = lambda a: None if a is None else jnp.asarray(a, dtype)   # noqa: E731
        return _feature_terms(as_dtype(ht), as_dtype(ht_t), shift)
    return _factor_terms(gram, shift, test, known_deficient, factor)


def _hadamard(pq: _TrainPart, pb: _TrainPart, c: int, dtype):
    """Q-side part (N x N, expanded over outputs: (x) 1 1^T) o B-side part (N C x N C), using
    I o A = diag(A) so that an identity factor never multiplies a formed matrix. Returns
    (diagonal, None) when the product is diagonal, else (None, matrix)."""
    if pb.is_identity:
        d = jnp.ones(pq.size, dtype) if pq.is_identity else pq.diag()
        return jnp.repeat(d, c), None
    if pq.is_identity:
        b = pb.matrix(dtype)
        return (jnp.diagonal(b), None) if c == 1 else \
            (None, b * _expand(jnp.eye(pq.size, dtype=dtype), c))
    return None, _expand(pq.matrix(dtype), c) * pb.matrix(dtype)


@jax.jit
def _add_product(acc, a, b, scale):
    """acc + scale a o b in one pass (acc None: scale a o b)."""
    term = scale * a * b
    return term if acc is None else acc + term

