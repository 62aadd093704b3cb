"""A cheap surrogate for categorical architectures and the hypervolume gain of a proposal.

Candidates are integer-coded choices (one column per parameter). The model is a Gaussian process whose
kernel counts mismatched choices, each parameter with its own weight (learned by maximising the marginal
likelihood): a few dozen evaluated cells are enough for it to tell which choices matter, where a forest or
a linear model on one-hot features would still be guessing. Every objective is minimised here.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.optimize import minimize

_JITTER = 1e-8
_RIDGE = 1.0  # on standardised targets: the trend is a prior guess, not a fit


def _mismatch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b), d) booleans: where two codings choose differently."""
    return a[:, None, :] != b[None, :, :]


class CategoricalGP:
    """Exact GP regression with k(x, y) = exp(-sum_d w_d [x_d != y_d]) on standardised targets."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        trend: np.ndarray | None = None,
        *,
        theta: np.ndarray | None = None,
        refit: bool = True,
    ) -> None:
        self.x = np.asarray(x, dtype=np.int64)
        y = np.asarray(y, dtype=float)
        self.mu = float(y.mean())
        self.sd = float(y.std()) or 1.0
        self.y = (y - self.mu) / self.sd
        # An optional linear trend on summary features (ridge), with the GP modelling what it leaves.
        self.beta = None
        if trend is not None and trend.shape[1]:
            f = np.asarray(trend, dtype=float)
            self.beta = np.linalg.solve(f.T @ f + _RIDGE * np.eye(f.shape[1]), f.T @ self.y)
            self.y = self.y - f @ self.beta
        self._d = _mismatch(self.x, self.x).astype(float)
        if theta is None or refit:
            theta = self._fit(theta)
        self.theta = theta
        self.log_w, self.log_noise = theta[:-1], float(theta[-1])
        k = self._kernel(self._d, np.exp(self.log_w)) + (np.exp(self.log_noise) + _JITTER) * np.eye(
            len(self.y)
        )
        self._chol = cho_factor(k, lower=True)
        self._alpha = cho_solve(self._chol, self.y)

    @staticmethod
    def _kernel(mismatch: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.exp(-(mismatch @ w))

    def _nll(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, noise = np.exp(theta[:-1]), np.exp(theta[-1])
        n = len(self.y)
        kf = self._kernel(self._d, w)
        k = kf + (noise + _JITTER) * np.eye(n)
        try:
            c = cho_factor(k, lower=True)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros_like(theta)
        alpha = cho_solve(c, self.y)
        nll = 0.5 * self.y @ alpha + np.log(np.diag(c[0])).sum()
        inner = np.outer(alpha, alpha) - cho_solve(c, np.eye(n))
        grad = np.empty_like(theta)
        for j in range(len(w)):
            grad[j] = -0.5 * np.sum(inner * (-w[j] * self._d[:, :, j] * kf))
        grad[-1] = -0.5 * np.trace(inner) * noise
        # A weak prior keeps the weights and the noise in a sensible range with few points.
        prior = 0.5 * ((theta[:-1] - np.log(0.5)) ** 2).sum() / 4 + 0.5 * (theta[-1] + 4) ** 2 / 4
        grad[:-1] += (theta[:-1] - np.log(0.5)) / 4
        grad[-1] += (theta[-1] + 4) / 4
        return float(nll + prior), grad

    def _fit(self, start: np.ndarray | None) -> np.ndarray:
        dims = self.x.shape[1]
        theta0 = np.r_[np.full(dims, np.log(0.5)), -4.0] if start is None else start
        bounds = [(np.log(1e-3), np.log(20.0))] * dims + [(np.log(1e-6), np.log(1.0))]
        res = minimize(self._nll, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
        return res.x if np.isfinite(res.fun) else theta0

    def predict(
        self, x: np.ndarray, trend: np.ndarray | None = None, chunk: int = 8192
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation, in the targets' own units."""
        x = np.asarray(x, dtype=np.int64)
        w = np.exp(self.log_w)
        # sum_d w_d [x_d != y_d] = sum(w) - sum_d w_d [x_d == y_d]: one small matrix product per chunk.
        levels = int(max(x.max(initial=0), self.x.max(initial=0))) + 2
        train = _one_hot(self.x, levels) * np.repeat(w, levels)
        means, sds = [], []
        for s in range(0, len(x), chunk):
            same = _one_hot(x[s : s + chunk], levels) @ train.T
            ks = np.exp(same - w.sum())
            means.append(ks @ self._alpha)
            v = solve_triangular(self._chol[0], ks.T, lower=True)
            sds.append(np.sqrt(np.clip(1.0 - (v * v).sum(0), 1e-12, None)))
        mean = np.concatenate(means)
        if self.beta is not None:
            mean = mean + np.asarray(trend, dtype=float) @ self.beta
        return mean * self.sd + self.mu, np.concatenate(sds) * self.sd


def _one_hot(x: np.ndarray, levels: int) -> np.ndarray:
    """Each column's codes (-1 for an absent choice shifted to 0) as one-hot blocks of ``levels``."""
    n, d = x.shape
    out = np.zeros((n, d * levels))
    out[np.arange(n)[:, None], np.arange(d) * levels + x + 1] = 1.0
    return out


def nondominated(points: np.ndarray) -> np.ndarray:
    """The rows of ``points`` (minimised) that no other row dominates."""
    pts = np.asarray(points, dtype=float)
    if len(pts) == 0:
        return pts
    le = (pts[:, None, :] <= pts[None, :, :]).all(-1)
    lt = (pts[:, None, :] < pts[None, :, :]).any(-1)
    dominated = (le & lt).any(0)
    return np.unique(pts[~dominated], axis=0)


def hv_gain_2d(front: np.ndarray, cand: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Exact hypervolume each candidate point would add to a 2-objective front (minimised)."""
    f = nondominated(front[(front < ref).all(1)]) if len(front) else np.empty((0, 2))
    f = f[np.argsort(f[:, 0])]
    # The dominated region's lower edge: height ref[1] left of the first point, then b_i from a_i on.
    left = np.r_[-np.inf, f[:, 0]]
    right = np.r_[f[:, 0], ref[0]]
    height = np.r_[ref[1], f[:, 1]]
    c = np.minimum(cand, ref)
    width = np.clip(right[None, :] - np.maximum(left[None, :], c[:, :1]), 0, None)
    return (width * np.clip(height[None, :] - c[:, 1:2], 0, None)).sum(1)


def hv_gain_mc(
    front: np.ndarray, cand: np.ndarray, ref: np.ndarray, rng: np.random.Generator, n: int = 4096
) -> np.ndarray:
    """Monte Carlo estimate of the hypervolume gain for three or more objectives."""
    low = np.minimum(cand.min(0), front.min(0) if len(front) else cand.min(0))
    box = np.prod(np.clip(ref - low, 1e-12, None))
    u = low + rng.random((n, len(ref))) * (ref - low)
    if len(front):
        free = ~(front[None, :, :] <= u[:, None, :]).all(-1).any(1)
        u = u[free]
    gains = np.zeros(len(cand))
    # A candidate the front already dominates adds nothing: only the others are counted, which is
    # most of the cost saved once a front exists.
    alive = np.arange(len(cand))
    if len(front):
        alive = np.flatnonzero(~(front[None, :, :] <= cand[:, None, :]).all(-1).any(1))
    for s in range(0, len(alive), 512):
        idx = alive[s : s + 512]
        gains[idx] = (cand[idx, None, :] <= u[None, :, :]).all(-1).sum(1)
    return gains * box / n


def hv_gain(
    front: np.ndarray, cand: np.ndarray, ref: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    if cand.shape[1] == 1:
        best = min(front.min(), ref[0]) if len(front) else ref[0]
        return np.clip(best - cand[:, 0], 0, None)
    if cand.shape[1] == 2:
        return hv_gain_2d(front, cand, ref)
    return hv_gain_mc(front, cand, ref, rng)
