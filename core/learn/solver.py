"""The penalised multinomial logistic-regression solver behind ``core.learn.head.Head``.

A small glmnet-style solver: proximal Newton steps with coordinate descent, working
sets, and warm starts along the C path, compiled with numba. It minimises
scikit-learn's objective (see ``core.learn.head``); L2 is solved exactly in the span of the
training rows. Binary problems fit one weight row (row 0 stays zero).
"""

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = ["BLAS", "balanced_weights", "c_min", "fit_path", "softmax", "standardise"]

# one controller for the process: threadpool_limits() rescans the loaded libraries on
# every call (about 5 ms with torch and numba loaded, half of a bootstrap refit);
# callers limit BLAS to one thread around small fits with BLAS.limit(...)
BLAS = ThreadpoolController()

# The kernels are plain scalar loops: numba compiles those several times faster than
# array expressions, and the compiled code is cached on disk (cache=True).
@numba.njit(cache=True, nogil=True)
def _objective(eta, y, s, W, rows, lam1, lam2):
    """Penalised weighted cross-entropy; eta (n, K) logits, W (d, K)."""
    n, K = eta.shape
    f = 0.0
    for i in range(n):
        m = eta[i, 0]
        for k in range(1, K):
            m = max(m, eta[i, k])
        t = 0.0
        for k in range(K):
            t += np.exp(eta[i, k] - m)
        f += s[i] * (m + np.log(t) - eta[i, y[i]])
    for k in rows:
        for j in range(W.shape[0]):
            f += lam1 * abs(W[j, k]) + 0.5 * lam2 * W[j, k] * W[j, k]
    return f


@numba.njit(cache=True, nogil=True)
def _prob(eta, i, k):
    """softmax(eta[i])[k]."""
    t = 0.0
    for c in range(eta.shape[1]):
        t += np.exp(eta[i, c] - eta[i, k])
    return 1.0 / t


@numba.njit(cache=True, nogil=True)
def _cd_sweeps(ZT, w, a, r, h, dw, deta, lam1, lam2, stop):
    """Coordinate descent on one class's quadratic model; returns the intercept step.

    ZT (d, n) features; w (d,) current row; a (d,) = sum_i h_i z_ij^2; r (n,) =
    h * deta - g, the model's gradient in the logits, kept up to date with deta.
    Cycles over all coordinates, then only non-zero ones until small, then all again.
    """
    d, n = ZT.shape
    hb, db, full = 0.0, 0.0, True
    for i in range(n):
        hb += h[i]
    for _ in range(1000):
        st = 0.0
        for i in range(n):
            st -= r[i] / hb
        db += st
        for i in range(n):
            deta[i] += st
            r[i] += st * h[i]
        chg = hb * st * st
        for j in range(d):
            v = w[j] + dw[j]
            if v == 0.0 and not full:
                continue
            u = a[j] * v
            for i in range(n):
                u -= r[i] * ZT[j, i]
            vn = 0.0
            if u > lam1:
                vn = (u - lam1) / (a[j] + lam2)
            elif u < -lam1:
                vn = (u + lam1) / (a[j] + lam2)
            if vn != v:
                dlt = vn - v
                dw[j] += dlt
                for i in range(n):
                    deta[i] += dlt * ZT[j, i]
                    r[i] += dlt * h[i] * ZT[j, i]
                chg = max(chg, a[j] * dlt * dlt)
        if chg < stop and full:
            break
        full = chg < stop
    return db


@numba.njit(cache=True, nogil=True)
def _newton_cd(ZT, y, s, W, b, eta, rows, lam1, lam2, tol, max_outer):
    """Fit W (d, K) and b (K,) in place, one class row at a time (glmnet style).

    ZT: (d, n) transposed features; y (n,) int; s (n,) sample weights; eta (n, K) =
    Z @ W + b on entry, kept in step. rows: the classes whose row is free (binary: [1];
    row 0 stays 0). Each row takes a proximal Newton step with an Armijo line search
    (Tseng & Yun 2009). Stops when an outer pass lowers the objective by < tol * f.
    """
    d, n = ZT.shape
    f = _objective(eta, y, s, W, rows, lam1, lam2)
    r, h, deta = np.empty(n), np.empty(n), np.empty(n)
    dw, a, old = np.empty(d), np.empty(d), np.empty(d)
    for _ in range(max_outer):
        f_start = f
        for k in rows:
            for i in range(n):
                p = _prob(eta, i, k)
                h[i] = max(s[i] * p * (1.0 - p), 1e-12 * s[i])
                r[i] = s[i] * (p - (1.0 if y[i] == k else 0.0))
                deta[i] = 0.0
            for j in range(d):
                a[j], dw[j], old[j] = 0.0, 0.0, W[j, k]
                for i in range(n):
                    a[j] += h[i] * ZT[j, i] * ZT[j, i]
            db = _cd_sweeps(ZT, old, a, r, h, dw, deta, lam1, lam2, 0.1 * tol * (1 + f))
            f = _line_search(eta, y, s, W, b, rows, k, old, dw, deta, db, lam1, lam2, f)
        if f_start - f < tol * (1 + f):
            break


@numba.njit(cache=True, nogil=True)
def _line_search(eta, y, s, W, b, rows, k, old, dw, deta, db, lam1, lam2, f):
    """Armijo backtracking along the Newton direction of row k; updates W, b, eta."""
    n, d = eta.shape[0], W.shape[0]
    expected = 0.0
    for j in range(d):
        new = old[j] + dw[j]
        expected += lam1 * (abs(new) - abs(old[j])) + 0.5 * lam2 * (new * new - old[j] * old[j])
    for i in range(n):
        expected += s[i] * (_prob(eta, i, k) - (1.0 if y[i] == k else 0.0)) * deta[i]
    step = 1.0
    for _ in range(30):
        for j in range(d):
            W[j, k] = old[j] + step * dw[j]
        for i in range(n):
            eta[i, k] += step * deta[i]
        f_new = _objective(eta, y, s, W, rows, lam1, lam2)
        if f_new <= f + 1e-4 * step * expected:
            b[k] += step * db
            return f_new
        for i in range(n):
            eta[i, k] -= step * deta[i]
        step *= 0.5
    for j in range(d):
        W[j, k] = old[j]
    return f


def softmax(logits):
    """Softmax over the last axis of logits (..., K)."""
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def standardise(Z):
    """(Zs, mean, scale): Z (n, d) centred and scaled per column; a constant column
    (std < 1e-12) gets scale 1, so it standardises to zeros instead of nan."""
    mean, scale = Z.mean(0), Z.std(0)
    scale = np.where(scale < 1e-12, 1.0, scale)
    return (Z - mean) / scale, mean, scale


def balanced_weights(y, K):
    """(n,) sample weights n / (K * count[y]): sklearn's class_weight="balanced"."""
    counts = np.bincount(y, minlength=K)
    return len(y) / (K * counts[y])


def c_min(Z, y, K):
    """Smallest C at which the L1 solution leaves zero: 1 / max_jk |gradient at W = 0|.

    Z: (n, d) standardised; y: (n,). Balanced weights make the intercept-only model
    predict the uniform prior 1/K, so the gradient is Z.T @ (s * (onehot(y) - 1/K)).
    """
    G = Z.T @ (balanced_weights(y, K)[:, None] * (np.eye(K)[y] - 1.0 / K))
    return 1.0 / max(np.abs(G).max(), 1e-12)


def _solve(Z, ZT, y, s, W, b, rows, lam1, lam2, tol):
    """One C by working sets: Newton-CD on the coordinates that are non-zero or break
    the optimality (KKT) condition |gradient| <= lam1; the set only grows, doubling
    at most per round, until no coordinate outside it breaks the condition."""
    onehot = np.eye(W.shape[1])[y]
    in_set = (W != 0).any(1)
    for round_ in range(100):
        eta = Z @ W + b
        grad = np.abs(ZT @ (s[:, None] * (softmax(eta) - onehot)))[:, rows].max(1)
        # 1 % slack: at the solver's tolerance zero coordinates sit just at the bound
        violators = np.flatnonzero(~in_set & (grad > lam1 * 1.01))
        if round_ > 0 and violators.size == 0:
            return
        cap = max(16, int(in_set.sum()))
        in_set[violators[np.argsort(-grad[violators], kind="stable")[:cap]]] = True
        ws = np.flatnonzero(in_set)
        Wws = np.ascontiguousarray(W[ws])
        _newton_cd(np.ascontiguousarray(ZT[ws]), y, s, Wws, b, eta, rows, lam1, lam2, tol, 200)
        W[ws] = Wws


def _row_span(Z):
    """(Z @ basis, basis): coordinates of the rows of Z (n, d) in an orthonormal basis
    (d, r) of their span, r <= min(n, d). The Gram eigendecomposition is much faster
    than an SVD here and accurate enough after dropping the tiny directions."""
    wide = Z.shape[0] <= Z.shape[1]
    ev, U = np.linalg.eigh(Z @ Z.T if wide else Z.T @ Z)
    keep = ev > ev.max() * 1e-10
    U, root = U[:, keep], np.sqrt(ev[keep])
    return (U * root, Z.T @ (U / root)) if wide else (Z @ U, U)


def fit_path(Z, y, Cs, l1_ratio, K, tol):
    """Fit at each C of the ascending `Cs`, each fit warm-started from the previous one.

    Z: (n, d) standardised float64; y: (n,) int in 0..K-1.
    Returns (Ws, bs): lists of W (d, K) and b (K,), binary with row 0 fixed at zero.
    """
    y = np.ascontiguousarray(y, dtype=np.int64)
    s = balanced_weights(y, K)
    rows = np.array([1]) if K == 2 else np.arange(K)
    basis = None
    if l1_ratio == 0.0:
        # L2: the solution lies in the span of the rows, where the columns are orthogonal
        Z, basis = _row_span(Z)
    ZT, W, b = np.ascontiguousarray(Z.T), np.zeros((Z.shape[1], K)), np.zeros(K)
    Ws, bs = [], []
    for C in Cs:
        lam1, lam2 = l1_ratio / C, (1.0 - l1_ratio) / C
        if l1_ratio == 0.0:
            _newton_cd(ZT, y, s, W, b, Z @ W + b, rows, lam1, lam2, tol, 200)
        else:
            _solve(Z, ZT, y, s, W, b, rows, lam1, lam2, tol)
        Ws.append(W.copy() if basis is None else basis @ W)
        bs.append(b.copy())
    return Ws, bs
