"""K-FAC: F_l ~ A_l (x) B_l with A = sum_(n,s) Ht Ht^T / N over the layer's input patches (bias
column last, scaled as the forward pass) and B = sum_((n,c),s) D D^T / (N S) over its backprops; a
dense layer (S = 1) is the usual K-FAC, a convolution KFC (Grosse & Martens 2016).

Damping is factored Tikhonov: (A + lam I) (x) (B + lam I) with lam = sqrt(rho). With the spatial
Grams Q = Ht Ht^T (N S x N S) and Bs = D D^T (N C S x N C S), push-through gives
    G_l[(n, c), (n', c')] = N S sum_{s, s'} [Q (Q + N lam)^+]_{(n s), (n' s')}
                                            [Bs (Bs + N S lam)^+]_{((n c) s), ((n' c') s')},
lam = 0 giving projectors (pseudo-inverses). For dense layers this is
    J_l F_l^{-1} J_l^T / N = N [Q_l (Q_l + N lam I)^{-1}] o [DD^T (DD^T + N lam I)^{-1}],
and the output layer (DD^T = 1 1^T (x) I_C) contributes the projector of Q_L, so with full-rank
factors (N <= d for the first layer, N C <= widths) G = (N (L - 1) + 1) I (literal K-FAC; the
paper rescales the output layer to get N L). Test operator: the same with the test rows on the left.
At infinite width (MLPs) DD^T = B_l (x) I_C.

Parameter space, for any loss (R = blockdiag(H_n^{1/2}), z = R H^+ r, rooted backprops R D): with
the augmented weight [W_l; b_l] (k x M) and E[n, s] = sum_c z[n, c] (R D)[(n, c), s] the gradient is
Ht^T E / N, and
    d[W_l; b_l] = (A + lam)^+ (Ht^T E / N) (B + lam)^+,
each factor applied in whichever form is smaller: the primal k x k (M x M) Gram or, by Woodbury,
the dual N S x N S (N C S x N C S) one: (A + lam)^+ Ht^T = N Ht^T (Q + N lam)^+. With both duals the
update is Ht^T A_l with the signal A_l = N S (Q + N lam)^+ P (Bs + N S lam)^+ (R D) (P: z on the
diagonal of samples and positions), one wide product for a wide MLP layer. Pseudo-inverses (lam =
0) cut at the dtype's `linalg.rank_rtol`, the same in both forms (same non-zero eigenvalues).
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
from ..dynamics.linear import Operator
from ..linalg import serial_blas
from ..networks.empirical import contract
from ..networks.kernels import require_features
from . import _cache, _layers


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


def _ridge_solve(gram: jnp.ndarray, shift: float, b: jnp.ndarray, with_rank: bool = False):
    """(gram + shift I)^+ b in jax.numpy for a symmetric PSD gram: Cholesky when gram + shift I is
    numerically positive definite (condition number below ~1/rank_rtol of the dtype), else an
    eigendecomposition with the dtype's rank cut (`linalg.rank_rtol`). Under jit the branch is
    chosen on device (lax.cond), on concrete arrays on the host. with_rank: also return the
    numerical rank of gram + shift I (concrete arrays only)."""
    gram = linalg.symmetrized(gram)
    n = gram.shape[0]
    rtol = linalg.rank_rtol(gram.dtype)
    c = linalg.cholesky_symmetric(gram + shift * jnp.eye(n, dtype=gram.dtype))
    if not _concrete(gram, b, shift):
        if shift > 0:
            return cho_solve((c, True), b)
        return jax.lax.cond(linalg.factor_is_pd(c, rtol), lambda: cho_solve((c, True), b),
                            lambda: _eigh_solve(gram, 0.0, b)[0])
    out = (cho_solve((c, True), b), n) if bool(linalg.factor_is_pd(c, rtol)) else \
        _eigh_solve(gram, shift, b)
    return (out[0], int(out[1])) if with_rank else out[0]


def _b_side(dr, z, lam: float):
    """E (B + lam)^+ (N S x M) for rooted backprops dr (N C, S, M) and z (N, C), as (coefficient
    N S P (Bs + N S lam)^+ (N S x N C S) to multiply by dr, None) when the dual is smaller, else
    (None, the product itself) through the primal M x M Gram."""
    n, c = z.shape
    s, m = dr.shape[1], dr.shape[2]
    flat = dr.reshape(n * c * s, m)
    if m < n * c * s:
        e = jnp.einsum("nc,ncsm->nsm", z, dr.reshape(n, c, s, m)).reshape(n * s, m)
        return None, n * s * _ridge_solve(flat.T @ flat, n * s * lam, e.T).T
    eye_n, eye_s = jnp.eye(n, dtype=z.dtype), jnp.eye(s, dtype=z.dtype)
    pz_t = (z[:, :, None, None, None] * eye_n[:, None, None, :, None]
            * eye_s[None, None, :, None, :]).reshape(n * c * s, n * s)
    return n * s * _ridge_solve(flat @ flat.T, n * s * lam, pz_t).T, None


def _layer(ht, dr, z, lam: float, primal: bool):
    """One layer's K-FAC step: d[W; b] (k x M) through the primal k x k Gram (primal=True), else
    the signal (N, S, M) whose contraction Ht^T A is d[W; b] (module docstring)."""
    n, s, k = ht.shape
    hf, drf = ht.reshape(n * s, k), dr.reshape(-1, dr.shape[-1])
    coef, w = _b_side(dr, z, lam)
    if primal:
        w = coef @ drf if w is None else w
        return _ridge_solve(hf.T @ hf, n * lam, hf.T @ w)
    q = hf @ hf.T
    sig = _ridge_solve(q, n * lam, coef) @ drf if w is None else _ridge_solve(q, n * lam, w)
    return sig.reshape(n, s, -1)


def _rooted_problem(K, damping, f, y, loss):
    """(lam, z = R H^+ r (N, C), rooted backprops R D per layer) for any loss."""
    lam = float(np.sqrt(damping))
    x = loss.pinv_residual(f, y)
    root = _layers.hessian_root(loss, f)
    z = x if root is None else jnp.einsum("ncd,nd->nc", root, x)
    dss = [d if root is None else
           _layers.rooted(d.reshape(K.n_train, K.out_dim, *d.shape[1:]), root).reshape(d.shape)
           for d in K.backprops_train]
    return lam, z.astype(dss[0].dtype), dss


def signals(K, damping, f, y, loss) -> list:
    """Per-layer signals A_l (N, S, M) of K-FAC for any loss (jax.numpy, jittable), so that
    d[W_l; b_l] = Ht_l^T A_l (both factors in their dual form)."""
    require_features(K, "a K-FAC parameter-space update")
    lam, z, dss = _rooted_problem(K, damping, f, y, loss)
    return [_layer(ht, dr, z, lam, False) for ht, dr in zip(K.layer_inputs_train, dss)]


def update(K, damping, f, y, loss) -> list:
    """Per-layer d[W_l; b_l] of K-FAC for any loss (jax.numpy, jittable): each layer's input
    factor in the primal form when it is smaller (k < N S: convolutions, narrow inputs), else
    through the signal."""
    require_features(K, "a K-FAC parameter-space update")
    lam, z, dss = _rooted_problem(K, damping, f, y, loss)
    out = []
    for ht, dr in zip(K.layer_inputs_train, dss):
        primal = ht.shape[2] < ht.shape[0] * ht.shape[1]
        out.append(_layer(ht, dr, z, lam, True) if primal else
                   contract((ht,), (_layer(ht, dr, z, lam, False),))[0])
    return out


def operator(K, damping: float = 0.0) -> Operator:
    if K.bwd_train is None:
        raise ValueError("K-FAC needs per-layer forward and backward kernels: finite-width "
                         "(empirical) kernels, or infinite-width kernels of an MLP")
    with serial_blas(K.bwd_train.shape[-1]):
        if any(s > 1 for s in K.positions):
            return _kfc_operator(K, damping)
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


def _spatial_product(pq, pb, n: int, s: int, c: int):
    """sum_{s, s'} pq[(n s), (n' s')] pb[((n c) s), ((n' c') s')] over (m2 x m) output pairs."""
    pq = _expand_4(pq.reshape(-1, s, n, s), c)
    return jnp.einsum("asbt,asbt->ab", pq, pb.reshape(pq.shape))


def _expand_4(q, c: int):
    return q if c == 1 else jnp.repeat(jnp.repeat(q, c, 0), c, 2)


def _kfc_operator(K, damping: float) -> Operator:
    """KFC's operator (module docstring) for kernels with a layer of several positions."""
    n, c, lam = K.n_train, K.out_dim, float(np.sqrt(damping))
    dtype = jnp.asarray(K.blocks_train).dtype
    train = test = None
    for l in range(K.depth):
        ht, d = K.layer_inputs_train[l], K.backprops_train[l]
        s = ht.shape[1]
        hf, df = ht.reshape(n * s, -1), d.reshape(n * c * s, -1)
        hft = dft = None
        if K.has_test:
            hft = K.layer_inputs_test[l].reshape(-1, hf.shape[1])
            dft = K.backprops_test[l].reshape(-1, df.shape[1])
        pq, pq_t, _ = _terms(hf @ hf.T, None if hft is None else hft @ hf.T, n * lam, (hf, hft),
                             dtype)
        pb, pb_t, _ = _terms(df @ df.T, None if dft is None else dft @ df.T, n * s * lam,
                             (df, dft), dtype)
        train = _add_product(train, _spatial_product(pq.matrix(dtype), pb.matrix(dtype), n, s, c),
                             1.0, float(n * s))
        if K.has_test:
            test = _add_product(test, _spatial_product(pq_t, pb_t, n, s, c), 1.0, float(n * s))
    notes = ("KFC (Grosse & Martens 2016): A sums patches over positions, B averages output "
             "gradients over positions; no infinite-width theory: alpha is measured",)
    return Operator("kfac", np.asarray(train, np.float64),
                    None if test is None else np.asarray(test, np.float64), None, float(damping),
                    c, False, {"damping == 0": damping == 0}, notes)
