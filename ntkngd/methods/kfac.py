"""K-FAC: F_l ~ A_{l-1} (x) B_l, A = Ht^T Ht / N (layer input with the bias column, scaled as in the
forward pass), B = D^T D / N (D: derivatives df/du_l, all C outputs stacked as rows).

Damping is factored Tikhonov: (A + lam I) (x) (B + lam I) with lam = sqrt(rho). By push-through,
    J_l F_l^{-1} J_l^T / N = N [Q_l (Q_l + N lam I)^{-1}] o [DD^T (DD^T + N lam I)^{-1}],
with Q_l = Ht Ht^T the forward kernel (expanded over outputs) and DD^T the backward Gram; lam = 0
gives projectors (pseudo-inverses). The output layer has DD^T = 1 1^T (x) I_C and contributes the
projector of Q_L, so with full-rank factors (N <= d for the first layer, N C <= widths)
    G = (N (L - 1) + 1) I          (literal K-FAC; the paper rescales the output layer to get N L).
Test operator: the same with Q_l(X', X), DD^T(X', X) on the left. At infinite width DD^T = B_l (x) I_C.

Parameter space (finite width, augmented weight [W_l; b_l] of shape (M_{l-1}[+1], M_l), so that
(A (x) B) vec(W) <-> A W B): the gradient is Ht^T P^T D / N with P[(n, c), n'] = g_{nc} delta_{nn'},
and Woodbury ((Ht^T Ht / N + lam)^{-1} Ht^T = N Ht^T (Q + N lam)^{-1}, and the same for D) gives
    d[W_l; b_l] = (A + lam)^{-1} Ht^T P^T D (B + lam)^{-1} / N = Ht^T X^T D,
    X = N (DD^T + N lam I)^{-1} P (Q + N lam I)^{-1}       (N C x N),
pseudo-inverses when lam = 0. So the per-sample signal is A_l = X^T D (N x M_l) and the update is the
same contraction Ht^T A_l as every other method; J dtheta reproduces G g above.
"""
from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import cho_solve

from .. import linalg
from .._checks import TheoryConditionWarning
from ..linalg import serial_blas
from ..dynamics.linear import Operator
from . import _cache
from .dual_solve import hessian_rows


def _expand(q: jnp.ndarray, c: int) -> jnp.ndarray:
    """Forward kernel over samples -> over (sample, output) pairs: Q (x) 1 1^T (sample-major)."""
    return q if c == 1 else jnp.kron(q, jnp.ones((c, c), q.dtype))


def _concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


def _eigh_solve(gram, shift, b):
    """(gram + shift I)^+ b by eigendecomposition with the rank cut; and the numerical rank."""
    w, u, keep = linalg.kept_spectrum(gram)
    inv = 1.0 / (w + shift) if shift > 0 else jnp.where(keep, 1.0 / jnp.where(keep, w, 1.0), 0.0)
    return u @ (inv[:, None] * (u.T @ b)), keep.sum()


def _features_pinv_solve(f, b):
    """(f f^T)^+ b for a gram given by features f (n x p, p < n: singular) through the p x p gram
    f^T f = V diag(w) V^T (same nonzero eigenvalues, same rank cut): f V diag(w_k^-2) V^T f^T b.
    The output layer has p = C: no n x n factorization at all (an n x n eigh inside a jitted step
    wakes OpenBLAS's threads, which then compete with XLA's on small machines)."""
    w, v, keep = linalg.kept_spectrum(linalg.symmetrized(f.T @ f))
    inv2 = jnp.where(keep, 1.0 / jnp.where(keep, w, 1.0) ** 2, 0.0)
    return f @ (v @ (inv2[:, None] * (v.T @ (f.T @ b)))), keep.sum()


def _ridge_solve(gram: jnp.ndarray, shift: float, b: jnp.ndarray, with_rank: bool = False,
                 features=None):
    """(gram + shift I)^+ b in jax.numpy for a symmetric PSD gram: Cholesky when gram + shift I is
    numerically positive definite (condition number below ~1/rank_rtol of the dtype), else an
    eigendecomposition with the dtype's rank cut (`linalg.rank_rtol`). Under jit the branch is
    chosen on device (lax.cond); on concrete arrays on the host, where a constant gram g 1 1^T
    (the output layer's backward kernel) is solved in closed form. Undamped with features f
    (gram = f f^T) narrower than the gram: through f^T f (`_features_pinv_solve`). with_rank:
    also return the numerical rank of gram + shift I (concrete arrays only)."""
    gram = linalg.symmetrized(gram)
    n = gram.shape[0]
    eye = jnp.eye(n, dtype=gram.dtype)
    rtol = linalg.rank_rtol(gram.dtype)
    narrow = shift == 0 and features is not None and features.shape[1] < n
    if not _concrete(gram, b, shift):
        if shift > 0:   # the small (N C x N C) inverse, then one matrix product with the wide b
            return cho_solve((linalg.cholesky_symmetric(gram + shift * eye), True), eye) @ b
        if narrow:
            return _features_pinv_solve(features.astype(gram.dtype), b)[0]
        c = linalg.cholesky_symmetric(gram)
        return jax.lax.cond(linalg.factor_is_pd(c, rtol),
                            lambda: cho_solve((c, True), b),
                            lambda: _eigh_solve(gram, 0.0, b)[0])
    if _constant(gram):   # (g0 1 1^T + s I)^+ in closed form
        out = _constant_solve(gram[0, 0], n, shift, b, 0), (n if shift > 0 else 1)
    elif narrow:
        out = _features_pinv_solve(jnp.asarray(features, gram.dtype), b)
    else:
        c = linalg.cholesky_symmetric(gram + shift * eye)
        out = (cho_solve((c, True), b), n) if bool(linalg.factor_is_pd(c, rtol)) else \
            _eigh_solve(gram, shift, b)
    return (out[0], int(out[1])) if with_rank else out[0]


def _psd_sqrt(H: jnp.ndarray) -> jnp.ndarray:
    """Per-sample H_n^{1/2} (N, C, C) of PSD output Hessians."""
    w, u = jnp.linalg.eigh(H)
    return jnp.einsum("nij,nj,nkj->nik", u, jnp.sqrt(jnp.clip(w, 0.0, None)), u)


def signals(K, damping, f, y, loss) -> list:
    """Per-layer signals A_l (N, M_l) of K-FAC for any loss (jax.numpy, jittable), so that
    d[W_l; b_l] = Ht_l^T A_l is F_l^{-1} grad_l with F_l ~ A_{l-1} (x) B_l,
    B_l = sum_n D_n^T H_n D_n / N. With R = blockdiag(H_n^{1/2}), z = R H^+ r and G = R DD^T R:
        A_l = N (Q_l + N lam)^+ Pz (G + N lam)^+ R D_l,     lam = sqrt(rho),
    pseudo-inverses when lam = 0 (MSE: R = I, z = r; see the module docstring). Both solves act
    on the small N x N C mixing matrix N (Q_l + N lam)^+ Pz (G + N lam)^+ (Pz^T as right-hand
    side, the inverses being symmetric), then one matrix product with the wide R D_l."""
    from .. import empirical
    empirical.require_features(K, "a K-FAC parameter-space update")
    n, c = K.n_train, K.out_dim
    shift = n * float(np.sqrt(damping))
    x = loss.pinv_residual(f, y)
    root = None if loss.identity_hessian else _psd_sqrt(loss.hessian(f))
    z = x if root is None else jnp.einsum("ncd,nd->nc", root, x)
    out = []
    for q, bwd, d, ht in zip(K.fwd_train, K.bwd_train, K.backprops_train, K.layer_inputs_train):
        if root is not None:
            bwd = hessian_rows(root, hessian_rows(root, bwd).T).T
            d = hessian_rows(root, d)
        pz_t = (z.astype(bwd.dtype)[:, :, None]
                * jnp.eye(n, dtype=bwd.dtype)[:, None, :]).reshape(n * c, n)   # Pz^T (N C, N)
        left = _ridge_solve(bwd, shift, pz_t, features=d)        # (G + N lam)^+ Pz^T
        mix = n * _ridge_solve(q, shift, left.T, features=ht)    # N (Q + N lam)^+ Pz (G + N lam)^+
        out.append(mix @ d.astype(mix.dtype))
    return out


def operator(K, damping: float = 0.0) -> Operator:
    with serial_blas(K.bwd_train.shape[-1]):
        return _operator(K, damping)


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
        if self.basis is not None:
            return jnp.sum(self.basis ** 2, axis=1)
        return jnp.diagonal(self.dense)

    def matrix(self, dtype) -> jnp.ndarray:
        if self.is_identity:
            return jnp.eye(self.size, dtype=dtype)
        return self.basis @ self.basis.T if self.basis is not None else self.dense


def _factor_terms(gram, shift, test, rank_deficient: bool = False, factor=None):
    """(gram + shift I)^+ [gram, test^T]: the train part (a `_TrainPart`) and the test part
    (transposed: rows index the left points), and the rank of gram + shift I. Undamped and
    numerically positive definite: the train part is I exactly and only the test part is solved;
    rank deficient (or known to be: rank_deficient): the projector and test U_k diag(1/w_k) U_k^T
    from one eigendecomposition (dtype rank cut); otherwise one solve with both right-hand sides.
    factor: (upper Cholesky factor of the symmetrized gram, whether it is numerically positive
    definite) when already computed (`_shared_factor`)."""
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
    """Whether the symmetrized gram is numerically positive definite (`linalg.factor_is_pd` of
    its Cholesky factor c) and test gram^{-1} by c (None without test), as one XLA computation,
    so that the factor is used in LAPACK's column-major layout without copies back and forth."""
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
    test_part = None if test is None else _constant_solve(g, n, shift, test, 1)
    return train, test_part, (n if shift > 0 else 1)


def _constant_solve(g, n: int, shift: float, b, axis: int):
    """(g 1 1^T + s I)^+ b (axis 0) or b (g 1 1^T + s I)^+ (axis 1) for an N x N constant gram:
    (b - a (sum of b along axis)) / s with a = g / (s + N g), or (sum) / (N^2 g) when s = 0."""
    total = b.sum(axis, keepdims=True)
    return (b - total * (g / (shift + n * g))) / shift if shift > 0 else \
        jnp.broadcast_to(total / (n * n * g), b.shape)


def _feature_terms(ht, ht_test, shift):
    """`_factor_terms` for a gram = Ht Ht^T given by its features Ht (N x p, p < N), through the
    p x p gram Ht^T Ht = V diag(w) V^T (the same nonzero eigenvalues): with
    A = Ht V_k diag(w_k + shift)^(-1/2) (kept k: the dtype's rank cut; all when shift > 0),
        (gram + shift I)^+ gram = A A^T,   test (gram + shift I)^+ = Ht' V_k diag(.)^(-1/2) A^T,
    by push-through. A Cholesky factor R R^T = Ht^T Ht + shift I replaces V diag(.)^(1/2) (A =
    Ht R^{-T}) when it certifies that the cut keeps every eigenvalue, lambda_min >=
    1 / ||R^{-1}||_F^2 > rtol trace >= rtol lambda_max; otherwise the eigendecomposition decides,
    as the N x N route does. Cost O(N p^2) instead of O(N^3)."""
    n, p = ht.shape
    small = linalg.symmetrized(ht.T @ ht)
    rtol = linalg.rank_rtol(small.dtype)
    rinv = linalg.lower_triangular_inverse(
        linalg.cholesky_symmetric(small + shift * jnp.eye(p, dtype=small.dtype)))
    finite = bool(jnp.all(jnp.isfinite(rinv)))
    if finite and (shift > 0 or bool(1.0 / jnp.sum(rinv ** 2) > rtol * jnp.trace(small))):
        basis, k = rinv.T, p
    else:
        w, v, keep = linalg.kept_spectrum(small)
        k = p if shift > 0 else int(keep.sum())
        basis = v[:, p - k:] / jnp.sqrt(w[p - k:] + shift)
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
    if train is not None:
        return train[l], (None if test is None else test[l])
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
    if _constant(gram):
        return _constant_terms(gram[0, 0], n, shift, test)
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


def _constant(gram) -> bool:
    """Whether gram = g 1 1^T with g > 0 (the output layer's backward kernel)."""
    g0 = gram[0, 0]
    return bool(g0 > 0) and bool(jnp.all(gram == g0))


def _isotropic_position(diag, dtype) -> bool:
    """Whether the projector diagonal diag(P_X) of the first layer's inputs is constant (the
    inputs are in isotropic position: Forster), to sqrt of the dtype's rank cut."""
    if diag is None:
        return False
    top = float(np.max(np.abs(diag)))
    return top > 0 and float(np.ptp(diag)) <= np.sqrt(linalg.rank_rtol(dtype)) * top


def _operator(K, damping: float) -> Operator:
    n, L = K.n_train, K.depth
    c = 1 if K.kron_outputs else K.out_dim
    fwd, bwd = jnp.asarray(K.fwd_train), jnp.asarray(K.bwd_train)
    m = bwd.shape[1]
    diag_sum = jnp.zeros(m, bwd.dtype)     # the diagonal terms (every one, when isotropic)
    dense_sum = test = None
    ranks_q, ranks_b = [], []
    shift = n * float(np.sqrt(damping))
    for l in range(L):     # same factors as `signals`, applied by solves (no inverse)
        qt = bt = None
        if K.has_test:
            qt, bt = jnp.asarray(K.fwd_test[l]), jnp.asarray(K.bwd_test[l])
        # The first layer's input Gram has rank <= d + 1 (inputs and bias).
        known_deficient = l == 0 and 0 < K.input_dim and n > K.input_dim + 1
        factor = _shared_factor(K, l, fwd[l]) if shift == 0 and not known_deficient else None
        pq, pq_t, rq = _terms(fwd[l], qt, shift, _layer_features(K, l, "fwd"), bwd.dtype,
                              known_deficient, factor)
        pb, pb_t, rb = _terms(bwd[l], bt, shift, _layer_features(K, l, "bwd"), bwd.dtype)
        ranks_q.append(rq)
        ranks_b.append(rb)
        if l == 0:
            first_diag = None if pq.is_identity else np.asarray(pq.diag())
        term_diag, term = _hadamard(pq, pb, c, bwd.dtype)
        if term is None:
            diag_sum = diag_sum + n * term_diag
        else:
            dense_sum = _add_product(dense_sum, term, 1.0, float(n))
        if K.has_test:
            test = _add_product(test, _expand(pq_t, c), pb_t, float(n))
    train = jnp.diag(diag_sum) if dense_sum is None else \
        dense_sum + jnp.diag(diag_sum)
    hidden_full = all(rb == m for rb in ranks_b[:-1])
    first_full = ranks_q[0] == n
    conditions = {
        "N <= d (first-layer input Gram invertible)": first_full,
        "every forward Gram invertible": all(r == n for r in ranks_q),
        "N C <= width (backward Grams invertible)": hidden_full,
        "damping == 0": damping == 0,
    }
    notes = ["literal K-FAC: the output layer contributes 1 (the paper's N L rescales it to N)"]
    if not first_full and _isotropic_position(first_diag, fwd.dtype):
        notes.append(f"K-FAC: the first-layer input Gram has rank {ranks_q[0]} < N = {n}, with the "
                     "inputs in isotropic position (diag(P_X) constant): the first layer "
                     f"contributes {ranks_q[0]} I")
    elif not first_full:
        msg = (f"K-FAC: the first-layer input Gram has rank {ranks_q[0]} < N = {n} (fewer input "
               "dimensions than points, or inputs centred on their own mean): the first layer "
               "contributes N diag(P_X), diagonal but not isotropic; put the inputs in isotropic "
               "position (ntkngd.data.forster_transform) to make it constant")
        warnings.warn(msg, TheoryConditionWarning)
        notes.append(msg)
    if not hidden_full or not all(r == n for r in ranks_q[1:]):
        msg = "K-FAC: a hidden-layer factor is rank deficient (N C > width?): not isotropic"
        warnings.warn(msg, TheoryConditionWarning)
        notes.append(msg)
    alpha = float(n * (L - 1) + 1) if all(conditions.values()) else None
    return Operator("kfac", np.asarray(train), None if test is None else np.asarray(test), alpha,
                    float(damping), K.out_dim, K.kron_outputs, conditions, tuple(notes))
