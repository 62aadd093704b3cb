"""A cheap surrogate for categorical architectures and the hypervolume gain of a proposal.

Candidates are integer-coded choices (one column per parameter). The model is a Gaussian process whose
kernel is the sum of two parts, their weights learned by maximising the marginal likelihood:

- additive effects: a Bayesian linear model on feature blocks (one block per kind of feature, e.g. one
  weight per choice of each parameter, and one per choice counted over parameters that offer the same
  choices), each block with its own variance. A few dozen evaluated architectures already tell which
  single choices matter (which edge should be a skip, how much a 3x3 convolution costs);
- interactions: a kernel that counts mismatched choices, each parameter with its own weight.

Unlike a fitted trend, the additive part keeps its uncertainty, so the predicted spread stays honest
for choices few evaluations have tried. Every objective is minimised here.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.optimize import minimize

_JITTER = 1e-8
_WEIGHT_PRIOR_VAR = 0.5  # of each log weight (kernel weights, amplitude, additive blocks)
_NOISE_PRIOR_VAR = 4.0  # of the log noise variance


def _mismatch(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b), d) booleans: where two codings choose differently."""
    return a[:, None, :] != b[None, :, :]


class CategoricalGP:
    """Exact GP regression on standardised targets with
    k(x, y) = a exp(-sum_d w_d [x_d != y_d]) + sum_b s_b f_b(x) . f_b(y).

    ``blocks`` are feature matrices (rows: the training codes); ``theta`` holds log w (one per
    parameter), log a, log s (one per block) and the log noise variance.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        blocks: list[np.ndarray] | None = None,
        *,
        theta: np.ndarray | None = None,
        refit: bool = True,
    ) -> None:
        self.x = np.asarray(x, dtype=np.int64)
        y = np.asarray(y, dtype=float)
        self.mu = float(y.mean())
        self.sd = float(y.std()) or 1.0
        self.y = (y - self.mu) / self.sd
        self.blocks = [np.asarray(b, dtype=float) for b in blocks or []]
        self._lin = [b @ b.T for b in self.blocks]
        self._d = _mismatch(self.x, self.x).astype(float)
        if theta is None or len(theta) != self._n_theta() or refit:
            theta = self._fit(
                theta if theta is not None and len(theta) == self._n_theta() else None
            )
        self.theta = theta
        dims, nb = self.x.shape[1], len(self.blocks)
        self.log_w = theta[:dims]
        self.amp = float(np.exp(theta[dims]))
        self.scales = np.exp(theta[dims + 1 : dims + 1 + nb])
        self.log_noise = float(theta[-1])
        k = self._gram(theta)[0] + (np.exp(self.log_noise) + _JITTER) * np.eye(len(self.y))
        self._chol = cho_factor(k, lower=True)
        self._alpha = cho_solve(self._chol, self.y)
        # Log marginal likelihood of the targets in their own units (standardising is a change of
        # scale): models of the same targets on different scales compare through it.
        self.log_evidence = (
            -0.5 * self.y @ self._alpha
            - np.log(np.diag(self._chol[0])).sum()
            - len(self.y) * np.log(self.sd)
        )

    def _n_theta(self) -> int:
        return self.x.shape[1] + len(self.blocks) + 2

    def _gram(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The noise-free kernel matrix and its interaction part alone."""
        dims, nb = self.x.shape[1], len(self.blocks)
        inter = np.exp(theta[dims]) * np.exp(-(self._d @ np.exp(theta[:dims])))
        k = inter.copy()
        for s, lin in zip(np.exp(theta[dims + 1 : dims + 1 + nb]), self._lin, strict=True):
            k += s * lin
        return k, inter

    def _nll(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        dims, nb = self.x.shape[1], len(self.blocks)
        noise = np.exp(theta[-1])
        n = len(self.y)
        kf, inter = self._gram(theta)
        try:
            c = cho_factor(kf + (noise + _JITTER) * np.eye(n), lower=True)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros_like(theta)
        alpha = cho_solve(c, self.y)
        nll = 0.5 * self.y @ alpha + np.log(np.diag(c[0])).sum()
        inner = np.outer(alpha, alpha) - cho_solve(c, np.eye(n))
        grad = np.empty_like(theta)
        w = np.exp(theta[:dims])
        for j in range(dims):
            grad[j] = -0.5 * np.sum(inner * (-w[j] * self._d[:, :, j] * inter))
        grad[dims] = -0.5 * np.sum(inner * inter)
        for b, (s, lin) in enumerate(
            zip(np.exp(theta[dims + 1 : dims + 1 + nb]), self._lin, strict=True)
        ):
            grad[dims + 1 + b] = -0.5 * np.sum(inner * (s * lin))
        grad[-1] = -0.5 * np.trace(inner) * noise
        # A weak prior keeps every weight and the noise in a sensible range with few points.
        # The kernel weights' prior is the tighter one: with few points, maximising the likelihood
        # would otherwise switch parameters off (weight near 0) and trust what is left too much.
        centre = self._prior_centre()
        var = np.r_[np.full(len(theta) - 1, _WEIGHT_PRIOR_VAR), _NOISE_PRIOR_VAR]
        nll += 0.5 * (((theta - centre) ** 2) / var).sum()
        grad += (theta - centre) / var
        return float(nll), grad

    def _prior_centre(self) -> np.ndarray:
        dims, nb = self.x.shape[1], len(self.blocks)
        return np.r_[np.full(dims, np.log(0.5)), np.log(0.5), np.full(nb, np.log(0.5)), -4.0]

    def _fit(self, start: np.ndarray | None) -> np.ndarray:
        dims, nb = self.x.shape[1], len(self.blocks)
        theta0 = self._prior_centre() if start is None else start
        bounds = (
            [(np.log(1e-3), np.log(20.0))] * dims
            + [(np.log(1e-3), np.log(10.0))] * (1 + nb)
            + [(np.log(1e-6), np.log(1.0))]
        )
        res = minimize(self._nll, theta0, jac=True, method="L-BFGS-B", bounds=bounds)
        return res.x if np.isfinite(res.fun) else theta0

    def predict(
        self, x: np.ndarray, blocks: list[np.ndarray] | None = None, chunk: int = 4096
    ) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation, in the targets' own units."""
        x = np.asarray(x, dtype=np.int64)
        blocks = [np.asarray(b, dtype=float) for b in blocks or []]
        w = np.exp(self.log_w)
        # sum_d w_d [x_d != y_d] = sum(w) - sum_d w_d [x_d == y_d]: one small matrix product per chunk.
        levels = int(max(x.max(initial=0), self.x.max(initial=0))) + 2
        train = _one_hot(self.x, levels) * np.repeat(w, levels)
        means, sds = [], []
        for s in range(0, len(x), chunk):
            same = _one_hot(x[s : s + chunk], levels) @ train.T
            ks = self.amp * np.exp(same - w.sum())
            prior = np.full(len(ks), self.amp)
            for scale, f, ftrain in zip(self.scales, blocks, self.blocks, strict=True):
                part = f[s : s + chunk]
                ks += scale * part @ ftrain.T
                prior += scale * (part * part).sum(1)
            means.append(ks @ self._alpha)
            v = solve_triangular(self._chol[0], ks.T, lower=True)
            sds.append(np.sqrt(np.clip(prior - (v * v).sum(0), 1e-12, None)))
        return np.concatenate(means) * self.sd + self.mu, np.concatenate(sds) * self.sd


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
