"""K-FAC from the seed's own factors: :func:`kfac`, an optimizer that reads the backward pass.

BP5 writes a layer's weight gradient as a product of two things the backward pass holds,
its input and its delta: for example ``i``, ``dℓ_i/dW̄ = δ_i x̄_iᵀ`` with ``x̄ = [x, 1]``
(the bias as a weight on a constant input) and ``δ = dℓ_i/dz``. The layer's block of the
Fisher matrix, ``F = E[vec(δ x̄ᵀ) vec(δ x̄ᵀ)ᵀ] = E[x̄ x̄ᵀ ⊗ δ δᵀ]``, is approximated
(Martens and Grosse 2015) by assuming the two factors independent::

    F ≈ A ⊗ G,    A = E[x̄ x̄ᵀ]  (n_in + 1, n_in + 1),    G = E[δ δᵀ]  (n_out, n_out)

so that ``(A ⊗ G)⁻¹ vec(dW̄) = vec(G⁻¹ dW̄ A⁻¹)``: two small inverses in place of one of
``(n_in + 1) n_out`` rows. With one example, ``A ⊗ G`` *is* that example's block (a
rank-one product has nothing to approximate); over a batch it is the approximation.

- **Where the factors come from**: :mod:`jbp.curvature.backward`. ``x̄`` and ``δ`` are
  each layer's ``weight_grad_operands`` (:mod:`jbp.layers.protocol`) of its forward
  residuals and the ``dy`` the chain gave it. The loss is a mean, so the chain's delta
  is ``c/B`` times an example's log-likelihood gradient; ``G = (B / c) Σ_i dy_i dy_iᵀ``
  undoes that (``c`` the loss's scale, :func:`jbp.curvature.backward.nll_scale`) and is
  then the curvature of the mean loss (its Gauss-Newton matrix, ``c`` times the Fisher).
- **Which Fisher**: ``fisher="sampled"`` (default) takes ``δ`` from one more backward
  pass with targets drawn from the model's own predictive distribution, the true
  Fisher; ``"empirical"`` takes the data's targets (the step's own backward), which is
  not the Fisher: far from the optimum its ``E[g gᵀ]`` is dominated by the mean gradient,
  and at a perfect fit it vanishes; Kunstner et al. (2019) show it can precondition badly.
- **Convolutions** (KFC, Grosse and Martens 2016): a kernel is shared over ``T`` output
  positions, ``dW̄ = Σ_t δ_t x̄_tᵀ`` (``x̄_t`` the window position ``t`` saw), and
  ``A = (1/B) Σ_{b, t} x̄ x̄ᵀ`` (sum over positions), ``G = (1/(B T)) Σ_{b, t} δ δᵀ``
  (mean over positions), assuming the positions' derivatives uncorrelated.
- **Weights shared over positions** (Eschenhagen et al. 2023): a sequence's ``Dense``,
  attention's four projections, a recurrent layer's ``W`` and ``U`` (shared by the time
  steps), the layers inside a :class:`jbp.layers.Residual`. A layer with several weight
  matrices gets one Kronecker block each (its params declare them, its
  ``kronecker_operands`` gives their operands; :mod:`jbp.layers.protocol`), with
  ``approximation="expand"`` (each position an example: the sums over positions above)
  or ``"reduce"`` (``A`` from each example's mean input over positions, ``G`` from its
  delta summed over them), :func:`factors`. Parameters in none of its blocks (a norm's
  gain inside a residual block) keep their plain gradient. A sequence's cross-entropy is
  a mean over positions too, so ``c = 1/T`` there.
- **Other layers with parameters** (norms, embeddings): no Kronecker
  block. ``fallback="diagonal"`` preconditions with the diagonal of the same Fisher,
  ``E[g_i²]`` from each example's own gradient (the layer's backward mapped over the
  batch), ``g / (diag + λ)``; ``"gradient"`` leaves the gradient as it is.
  :meth:`KFAC.describe` says which each layer gets.
- **Estimation**: optionally from the batch's first ``statistics_batch`` rows only
  (:meth:`jbp.curvature.Backward.subset`), then exponential moving averages, ``F ← w F + (1 − w) F_batch`` with
  ``w = min(ema, t / (t + 1))`` at step ``t`` (so step 0 takes its batch's factors).
- **Damping** (Tikhonov, ``F + λ I``), split between the factors as π-damping:
  ``(A + π √λ I) ⊗ (G + √λ/π I)`` with ``π = sqrt((tr A / dim A) / (tr G / dim G))``.
- **Inverses** by Cholesky factorisations, recomputed every ``inverse_every`` steps
  (``lax.cond``), with the damping and each damped factor's condition number.
- **The update**: ``G⁻¹ dW̄ A⁻¹`` per layer, then any optax chain (default
  ``optax.sgd(learning_rate, momentum)`` after ``optax.add_decayed_weights``).
- **Adaptive** (``adaptive=True``; Martens and Grosse 2015, sections 6.5 and 7): the step
  ``δ = α Δ + μ δ_prev`` (``Δ = −F̃⁻¹ g`` the preconditioned gradient, ``δ_prev`` the
  last step) with ``α`` and ``μ`` minimising the quadratic model
  ``M(δ) = gᵀδ + ½ δᵀ(C + λ I)δ``, ``C`` the curvature of the mean loss over the whole
  network, cross-layer terms included (:func:`fisher_gram`), and the damping ``λ``
  adapted by the Levenberg-Marquardt rule on the reduction ratio
  ``ρ = (L(θ + δ) − L(θ)) / (gᵀδ + ½ δᵀ C δ)``, measured every ``damping_every`` steps by
  one more forward pass on the same batch (:meth:`jbp.curvature.Backward.loss_at`):
  ``λ ← ω λ`` if ``ρ > 3/4``, ``λ ← λ / ω`` if ``ρ < 1/4``, ``ω = damping_decay ** damping_every``.

Per-layer statistics are in the state, :attr:`KFACState.stats` (:class:`KFACStats`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from jbp import _validate
from jbp.curvature import backward as bw
from jbp.layers.params import Layer
from jbp.layers.protocol import weight_blocks

Array = jax.Array

#: ``fisher=``: targets drawn from the model, or the data's.
FISHERS = ("sampled", "empirical")
#: ``fallback=``: what a layer without a Kronecker block gets.
FALLBACKS = ("diagonal", "gradient")
#: ``approximation=``: weights shared over positions (Eschenhagen et al. 2023).
APPROXIMATIONS = ("expand", "reduce")


class KFACStats(NamedTuple):
    """Per-layer statistics, each ``(layers,)``; NaN where a layer has no Kronecker block.

    Attributes:
      damping_A, damping_G: ``π √λ`` and ``√λ / π``, added to ``A`` and ``G`` at the last
        inversion.
      cond_A, cond_G: the condition numbers of the damped ``A`` and ``G`` then.
      update_norm: the norm of each layer's preconditioned update this step, before the
        optax chain (0 for a layer without parameters).
    """

    damping_A: Array
    damping_G: Array
    cond_A: Array
    cond_G: Array
    update_norm: Array


class KFACQuad(NamedTuple):
    """The quadratic model's choices of the last step (``adaptive=True``; NaN otherwise).

    Attributes:
      learning_rate, momentum: ``α`` and ``μ`` of ``δ = α Δ + μ δ_prev``.
      model_change: ``M(δ) − M(0) = gᵀδ + ½ δᵀ C δ``, the change the model predicts.
      rho: the reduction ratio ``(L(θ + δ) − L(θ)) / model_change`` at its last
        measurement (every ``damping_every`` steps).
    """

    learning_rate: Array
    momentum: Array
    model_change: Array
    rho: Array


class KFACState(NamedTuple):
    """:func:`kfac`'s state; every per-layer entry is ``()`` where it does not apply.

    Attributes:
      count: the steps taken.
      key: the raw PRNG key of the sampled targets (``uint32``).
      A, G: the factors' moving averages, per Kronecker layer.
      A_inv, G_inv: the damped factors' inverses of the last inversion.
      diagonal: the diagonal Fisher's moving average, per fallback layer (params' shape).
      stats: :class:`KFACStats`.
      inner: the state of the optax chain the preconditioned update goes through (``()``
        with ``adaptive``).
      damping: ``λ`` now (constant unless ``adaptive``).
      velocity: the last step ``δ_prev`` with ``adaptive`` (params' structure), else ``()``.
      quad: :class:`KFACQuad`.
    """

    count: Array
    key: Array
    A: tuple
    G: tuple
    A_inv: tuple
    G_inv: tuple
    diagonal: tuple
    stats: KFACStats
    inner: Any
    damping: Array
    velocity: Any
    quad: KFACQuad


def block(p) -> str:
    """What a layer with params ``p`` gets: ``"kronecker"`` for a :class:`jbp.Layer`
    ``(W, b)`` (its layer must have ``weight_grad_operands``), ``"blocks"`` for params
    holding several weight blocks (:func:`jbp.layers.protocol.weight_blocks`; its layer
    must have ``kronecker_operands``), ``"none"`` without parameters, else ``"fallback"``."""
    if not jax.tree.leaves(p):
        return "none"
    if isinstance(p, Layer) and jnp.ndim(p.W) >= 2:
        return "kronecker"
    if weight_blocks(p):
        return "blocks"
    return "fallback"


def get_path(tree, path: tuple):
    """The node of ``tree`` at ``path`` (field names and tuple indices)."""
    for k in path:
        tree = getattr(tree, k) if isinstance(k, str) else tree[k]
    return tree


def set_path(tree, path: tuple, value):
    """``tree`` with the node at ``path`` replaced by ``value`` (NamedTuples and tuples)."""
    if not path:
        return value
    k, rest = path[0], path[1:]
    if isinstance(k, str):
        return tree._replace(**{k: set_path(getattr(tree, k), rest, value)})
    return type(tree)(set_path(v, rest, value) if i == k else v for i, v in enumerate(tree))


def block_sizes(p, weight: tuple, bias) -> tuple[int, int]:
    """``(dim A, dim G) = (n_in + 1 or n_in without a bias, n_out)`` of one weight block."""
    W = get_path(p, weight)
    return math.prod(W.shape[1:]) + (bias is not None), W.shape[0]


def factor_sizes(p: Layer) -> tuple[int, int]:
    """``(dim A, dim G) = (n_in + 1, n_out)`` of a Kronecker layer's params."""
    return math.prod(p.W.shape[1:]) + 1, p.W.shape[0]


def factors(a: Array, delta: Array, scale: float, approximation: str = "expand",
            bias: bool = True) -> tuple[Array, Array]:
    """One batch's factors of a weight shared by ``T`` positions (Eschenhagen et al. 2023).

    - ``"expand"`` (each position an example of its own, as KFC's convolutions):
      ``A = (1/B) Σ_{b,t} x̄ x̄ᵀ`` and ``G = (scale / T) Σ_{b,t} dy dyᵀ``. The paper writes
      ``A = (1/(BT)) Σ x̄ x̄ᵀ``, ``G = scale Σ dy dyᵀ``: the same ``A ⊗ G``, and the same
      π-damped inverse (π moves the factor ``T`` between the dampings too).
    - ``"reduce"`` (the positions summed before the outer products):
      ``A = (1/B) Σ_b x̂_b x̂_bᵀ`` with ``x̂_b = (1/T) Σ_t x̄_bt`` and
      ``G = scale Σ_b (Σ_t dy_bt)(Σ_t dy_bt)ᵀ``.

    With ``T = 1`` both are Martens and Grosse's factors.

    Args:
      a: the inputs ``(B, T, n_in)`` (a ones column is appended for the bias).
      delta: the chain's deltas ``(B, T, n_out)`` at the same positions.
      scale: ``B / c`` (:attr:`jbp.curvature.backward.Backward.scale`).
      approximation: ``"expand"`` or ``"reduce"``.
      bias: whether the weight has a bias (``x̄ = [x, 1]``) or not (``x̄ = x``).
    """
    batch, positions = a.shape[0], a.shape[1]
    if bias:
        a = jnp.concatenate([a, jnp.ones(a.shape[:-1] + (1,), a.dtype)], axis=-1)  # x̄ = [x, 1]
    if approximation == "reduce":
        a_hat, delta_sum = jnp.mean(a, axis=1), jnp.sum(delta, axis=1)
        return a_hat.T @ a_hat / batch, scale * (delta_sum.T @ delta_sum)
    a = a.reshape(batch * positions, -1)
    delta = delta.reshape(batch * positions, -1)
    return a.T @ a / batch, (scale / positions) * (delta.T @ delta)


def pi_damping(A: Array, G: Array, damping) -> tuple[Array, Array]:
    """``(π √λ, √λ / π)`` with ``π = sqrt((tr A / dim A) / (tr G / dim G))``."""
    tiny = jnp.finfo(A.dtype).tiny
    pi = jnp.sqrt(jnp.maximum(jnp.trace(A) / A.shape[0], tiny) / jnp.maximum(jnp.trace(G) / G.shape[0], tiny))
    root = jnp.sqrt(jnp.asarray(damping, A.dtype))
    return pi * root, root / pi


def damped_inverse(F: Array, d: Array) -> tuple[Array, Array]:
    """``((F + d I)⁻¹, κ_F(F + d I))`` for a symmetric positive semi-definite ``F``, by a
    Cholesky factorisation (several times faster than an eigendecomposition on CPU).

    ``κ_F(M) = ‖M‖_F ‖M⁻¹‖_F`` is the Frobenius-norm condition number: at least the
    2-norm one, ``λ_max / λ_min``, and at most ``n`` times it."""
    damped = F + d * jnp.eye(F.shape[0], dtype=F.dtype)
    inverse = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(damped, lower=True),
                                         jnp.eye(F.shape[0], dtype=F.dtype))
    return inverse, jnp.linalg.norm(damped) * jnp.linalg.norm(inverse)


def precondition(g: Layer, A_inv: Array, G_inv: Array) -> Layer:
    """``G⁻¹ dW̄ A⁻¹`` with ``dW̄ = [dW, db]`` ``(n_out, n_in + 1)``, as ``Layer(W, b)``."""
    n_out = g.W.shape[0]
    dW_bar = jnp.concatenate([g.W.reshape(n_out, -1), g.b[:, None]], axis=1)
    U = G_inv @ dW_bar @ A_inv
    return Layer(W=U[:, :-1].reshape(g.W.shape), b=U[:, -1])


def precondition_blocks(g, blocks: tuple, A_inv: tuple, G_inv: tuple):
    """``g`` with each weight block's ``[dW, db]`` (or ``dW`` alone without a bias)
    replaced by ``G⁻¹ dW̄ A⁻¹``; leaves in no block keep their gradient."""
    for (weight, bias), a_inv, g_inv in zip(blocks, A_inv, G_inv):
        dW = get_path(g, weight)
        dW_bar = dW.reshape(dW.shape[0], -1)
        if bias is not None:
            dW_bar = jnp.concatenate([dW_bar, get_path(g, bias)[:, None]], axis=1)
        U = g_inv @ dW_bar @ a_inv
        if bias is not None:
            g, U = set_path(g, bias, U[:, -1]), U[:, :-1]
        g = set_path(g, weight, U.reshape(dW.shape))
    return g


def per_example_grads(layer, params, residuals, dy: Array) -> Any:
    """Each example's own ``dparams`` (a leading batch axis on every leaf): the layer's
    backward mapped over the batch's rows."""
    def one(r, d):
        return layer.backward(params, jax.tree.map(lambda a: a[None], r), d[None])[0]

    return jax.vmap(one)(residuals, dy)


def diagonal_fisher(layer, params, residuals, dy: Array, scale: float) -> Any:
    """``(B / c) Σ_i g(dy_i)²``, the diagonal of the curvature of the mean loss, from each
    example's own gradient (:func:`per_example_grads`)."""
    return jax.tree.map(lambda g: scale * jnp.sum(g * g, axis=0), per_example_grads(layer, params, residuals, dy))


def fisher_gram(layers, params, residuals, dys, scale: float, vectors) -> Array:
    """``C_ab = v_aᵀ C v_b`` for the curvature ``C`` of the mean loss over all layers
    (cross-layer terms included) and parameter-shaped ``vectors`` ``(k,)``: ``(k, k)``.

    ``C = (B / c) Σ_i g_i g_iᵀ``, ``g_i`` example ``i``'s gradient through the chain's
    ``dys`` (``c / B`` times its log-likelihood gradient), so ``C_ab = (B / c) Σ_i u_ia u_ib``
    with ``u_ia = g_iᵀ v_a``. With the sampled ``dys`` (targets drawn from the model) ``C``
    is a Monte Carlo estimate of ``c`` times the true Fisher, unbiased; with the data's,
    the empirical Fisher. For a Kronecker layer, BP5's operands give
    ``g_iᵀ v = Σ_t δ_itᵀ V̄ x̄_it`` without forming ``g_i``; another layer maps its backward
    over the batch (:func:`per_example_grads`).
    """
    u = 0.0
    for layer, p, r, dy, *vs in zip(layers, params, residuals, dys, *vectors):
        kind = block(p)
        if kind == "kronecker":
            a, delta = layer.weight_grad_operands(p, r, dy)
            a_bar = jnp.concatenate([a, jnp.ones(a.shape[:-1] + (1,), a.dtype)], axis=-1)  # x̄ = [x, 1]
            n_out = p.W.shape[0]
            V = jnp.stack([jnp.concatenate([v.W.reshape(n_out, -1), v.b[:, None]], axis=1) for v in vs])
            projected = jnp.einsum("bti,koi->btko", a_bar, V)  # one matmul, as a forward pass's
            u = u + jnp.einsum("btko,bto->bk", projected, delta)
        elif kind == "fallback":
            g = per_example_grads(layer, p, r, dy)
            u = u + jnp.stack([sum(jnp.sum((gi * vi).reshape(gi.shape[0], -1), axis=1)
                                   for gi, vi in zip(jax.tree.leaves(g), jax.tree.leaves(v))) for v in vs], axis=1)
    return scale * (u.T @ u)


def quadratic_model(C: Array, D: Array, b: Array, damping) -> tuple[Array, Array]:
    """``(w, change)``: the coefficients ``w`` of ``δ = Σ_a w_a v_a`` that minimise
    ``bᵀw + ½ wᵀ(C + λ D)w`` and the undamped model's change ``bᵀw + ½ wᵀ C w`` there
    (Martens and Grosse 2015, section 7).

    Args:
      C: ``v_aᵀ C v_b`` (:func:`fisher_gram`), ``(k, k)``.
      D: ``v_aᵀ v_b``, ``(k, k)``.
      b: ``gᵀ v_a``, ``(k,)``.
      damping: ``λ``.
    A vector that is zero (the first step's ``δ_prev``) gets the coefficient 0.
    """
    zero = jnp.diag(D) == 0
    damped = C + damping * D
    keep = ~(zero[:, None] | zero[None, :])
    damped = jnp.where(keep, damped, jnp.eye(D.shape[0], dtype=D.dtype))  # decouple the zero vectors
    w = -jnp.linalg.solve(damped, jnp.where(zero, 0, b))
    return w, b @ w + 0.5 * w @ C @ w


def levenberg_marquardt(damping, rho, decay):
    """``λ`` after a reduction ratio ``ρ``: ``decay · λ`` if ``ρ > 3/4``, ``λ / decay`` if
    ``ρ < 1/4`` or ``ρ`` is not finite, else ``λ`` (Martens and Grosse 2015, section 6.5)."""
    worse = (rho < 0.25) | ~jnp.isfinite(rho)
    return jnp.where(worse, damping / decay, jnp.where(rho > 0.75, damping * decay, damping))


def block_operands(i: int, layer, p, residuals, dy) -> tuple:
    """``layer.kronecker_operands(p, residuals, dy)``, checked: one ``(a, delta)`` per
    weight block of ``p`` (:func:`jbp.layers.protocol.weight_blocks`)."""
    method = getattr(layer, "kronecker_operands", None)
    if not callable(method):
        raise TypeError(f"jbp.kfac: layers[{i}] ({type(layer).__name__}) has parameters with weight blocks but no "
                        "kronecker_operands(params, residuals, dy) method (see jbp.layers.protocol)")
    operands, blocks = tuple(method(p, residuals, dy)), weight_blocks(p)
    if len(operands) != len(blocks):
        raise ValueError(f"jbp.kfac: layers[{i}] ({type(layer).__name__}).kronecker_operands gave {len(operands)} "
                         f"(a, delta) pairs for its {len(blocks)} weight blocks")
    return operands


def _leaf_paths(tree, prefix: tuple = ()) -> list:
    """The paths (field names, tuple indices) of ``tree``'s array leaves."""
    if hasattr(tree, "_fields"):
        return [q for k in tree._fields for q in _leaf_paths(getattr(tree, k), prefix + (k,))]
    if isinstance(tree, (tuple, list)):
        return [q for i, v in enumerate(tree) for q in _leaf_paths(v, prefix + (i,))]
    return [prefix] if tree is not None else []


def _dot(a, b) -> Array:
    pairs = list(zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    return sum(jnp.sum(x * y) for x, y in pairs) if pairs else jnp.zeros(())


def _norm(tree) -> Array:
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(sum(jnp.sum(a * a) for a in leaves)) if leaves else jnp.zeros(())


@dataclasses.dataclass(frozen=True, init=False)
class KFAC:
    """The K-FAC optimizer (see the module docstring); make one with :func:`kfac`.

    An optax ``GradientTransformation`` (``init``, ``update``) that reads the backward
    pass (``reads_backward``, :mod:`jbp.curvature.backward`): the training step calls
    ``update(grads, state, params, backward=...)``.
    """

    learning_rate: Union[float, Callable]
    damping: float
    ema: float
    inverse_every: int
    fisher: str
    momentum: Optional[float]
    weight_decay: float
    fallback: str
    seed: int
    then: Optional[optax.GradientTransformation]
    adaptive: bool
    damping_every: int
    damping_decay: float
    damping_bounds: tuple
    statistics_batch: Optional[int]
    approximation: str

    #: The training step hands this optimizer its backward pass.
    reads_backward = True

    def __init__(self, learning_rate, damping, ema, inverse_every, fisher, momentum, weight_decay, fallback,
                 seed, then, adaptive=False, damping_every=5, damping_decay=0.95, damping_bounds=(1e-8, 1e8),
                 statistics_batch=None, approximation="expand"):
        if then is None and not adaptive and not callable(learning_rate):
            _validate.real("learning_rate", learning_rate, positive=True, finite=True)
        _validate.real("damping", damping, positive=True, finite=True)
        _validate.real("ema", ema, finite=True)
        if not 0 <= ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {ema}")
        if momentum is not None and not 0 <= _validate.real("momentum", momentum, finite=True) < 1:
            raise ValueError(f"momentum must be in [0, 1) or None, got {momentum}")
        _validate.real("weight_decay", weight_decay, finite=True)
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if then is not None:
            _validate.optimizer(then)
        if not isinstance(adaptive, bool):
            raise TypeError(f"adaptive must be True or False, got {adaptive!r}")
        if adaptive and (then is not None or weight_decay):
            raise ValueError("adaptive=True chooses the step itself (learning rate and momentum from the quadratic "
                             f"model); it takes no then= or weight_decay=, got then={then!r}, "
                             f"weight_decay={weight_decay!r}")
        _validate.real("damping_decay", damping_decay, positive=True, finite=True)
        if not damping_decay < 1:
            raise ValueError(f"damping_decay must be in (0, 1), got {damping_decay}")
        if not (isinstance(damping_bounds, (tuple, list)) and len(damping_bounds) == 2):
            raise TypeError(f"damping_bounds must be a pair (low, high), got {damping_bounds!r}")
        low, high = (_validate.real(f"damping_bounds[{i}]", v, positive=True) for i, v in enumerate(damping_bounds))
        if not low <= damping <= high:
            raise ValueError(f"damping must lie within damping_bounds {damping_bounds}, got {damping}")
        values = dict(
            learning_rate=learning_rate, damping=float(damping), ema=float(ema),
            inverse_every=_validate.positive_int("inverse_every", inverse_every),
            fisher=_validate.name("fisher", fisher, FISHERS),
            momentum=None if momentum is None else float(momentum), weight_decay=float(weight_decay),
            fallback=_validate.name("fallback", fallback, FALLBACKS),
            seed=_validate.integer("seed", seed, low=0, high=2**32 - 1), then=then, adaptive=adaptive,
            damping_every=_validate.positive_int("damping_every", damping_every),
            damping_decay=float(damping_decay), damping_bounds=(float(low), float(high)),
            statistics_batch=None if statistics_batch is None else _validate.positive_int("statistics_batch",
                                                                                           statistics_batch),
            approximation=_validate.name("approximation", approximation, APPROXIMATIONS),
        )
        for k, v in values.items():
            object.__setattr__(self, k, v)

    def chain(self) -> optax.GradientTransformation:
        """The optax chain the preconditioned update goes through: ``then``, else
        ``add_decayed_weights(weight_decay)`` (if > 0) and ``sgd(learning_rate, momentum)``."""
        if self.then is not None:
            return self.then
        sgd = optax.sgd(self.learning_rate, self.momentum)
        return optax.chain(optax.add_decayed_weights(self.weight_decay), sgd) if self.weight_decay else sgd

    def describe(self, net) -> tuple:
        """One line per layer of ``net``: which preconditioner it gets."""
        lines = []
        for i, (layer, p) in enumerate(zip(net.layers, net.param_shapes(jnp.float32))):
            kind, name = block(p), f"layers[{i}] {type(layer).__name__}"
            if kind == "kronecker":
                a, g = factor_sizes(p)
                lines.append(f"{name}: Kronecker factors A {a}x{a} (input and bias), G {g}x{g} (delta)")
            elif kind == "blocks":
                blocks = weight_blocks(p)
                parts = []
                for weight, bias in blocks:
                    a, g = block_sizes(p, weight, bias)
                    parts.append(f"{'.'.join(map(str, weight))} A {a}x{a} G {g}x{g}")
                covered = {b for blk in blocks for b in blk if b is not None}
                rest = [".".join(map(str, path)) for path in _leaf_paths(p) if path not in covered]
                lines.append(f"{name}: {len(blocks)} Kronecker blocks, weights shared over positions "
                             f"({self.approximation}): " + ", ".join(parts)
                             + (f"; plain gradient for {', '.join(rest)}" if rest else ""))
            elif kind == "fallback":
                lines.append(f"{name}: {'diagonal Fisher' if self.fallback == 'diagonal' else 'plain gradient'} "
                             "(no Kronecker-factored block)")
            else:
                lines.append(f"{name}: no parameters")
        return tuple(lines)

    def init(self, params) -> KFACState:
        """The state for ``params`` (one entry per layer): factors zero, inverses identity."""
        kinds = [block(p) for p in params]
        dtype = jnp.result_type(*jax.tree.leaves(params))
        A, G, A_inv, G_inv, diagonal = [], [], [], [], []
        for p, kind in zip(params, kinds):
            if kind == "blocks":
                sizes = [block_sizes(p, *blk) for blk in weight_blocks(p)]
                A.append(tuple(jnp.zeros((a, a), dtype) for a, _ in sizes))
                G.append(tuple(jnp.zeros((g, g), dtype) for _, g in sizes))
                A_inv.append(tuple(jnp.eye(a, dtype=dtype) for a, _ in sizes))
                G_inv.append(tuple(jnp.eye(g, dtype=dtype) for _, g in sizes))
                diagonal.append(())
                continue
            sizes = factor_sizes(p) if kind == "kronecker" else None
            A.append(jnp.zeros((sizes[0],) * 2, dtype) if sizes else ())
            G.append(jnp.zeros((sizes[1],) * 2, dtype) if sizes else ())
            A_inv.append(jnp.eye(sizes[0], dtype=dtype) if sizes else ())
            G_inv.append(jnp.eye(sizes[1], dtype=dtype) if sizes else ())
            diagonal.append(jax.tree.map(jnp.zeros_like, p) if kind == "fallback" and self.fallback == "diagonal"
                            else ())
        # one array per field: a state whose leaves share a buffer cannot be donated
        nan = lambda: jnp.full((len(kinds),), jnp.nan, dtype)
        stats = KFACStats(nan(), nan(), nan(), nan(), jnp.zeros((len(kinds),), dtype))
        scalar = lambda v: jnp.full((), v, dtype)
        return KFACState(jnp.zeros((), jnp.int32), jax.random.PRNGKey(self.seed), tuple(A), tuple(G),
                         tuple(A_inv), tuple(G_inv), tuple(diagonal), stats,
                         () if self.adaptive else self.chain().init(params), scalar(self.damping),
                         jax.tree.map(jnp.zeros_like, params) if self.adaptive else (),
                         KFACQuad(*(scalar(jnp.nan) for _ in KFACQuad._fields)))

    def update(self, grads, state: KFACState, params=None, *, backward: Optional[bw.Backward] = None):
        """``(updates, state)``: the factors of this step's ``backward``, the
        preconditioned ``grads``, then the optax chain."""
        if backward is None:
            raise bw.missing("jbp.kfac")
        key, sample_key = jax.random.split(state.key)
        full = backward
        if self.statistics_batch is not None:  # the curvature from the batch's first rows
            backward = backward.subset(self.statistics_batch)
        dys = backward.dys if self.fisher == "empirical" else backward.sampled_dys(sample_key)
        t = state.count.astype(jnp.result_type(float))
        w = jnp.minimum(self.ema, t / (t + 1))  # step 0 takes its batch's factors
        average = lambda old, new: jax.tree.map(lambda o, n: w.astype(o.dtype) * o + (1 - w.astype(o.dtype)) * n,
                                                old, new)
        A, G, diagonal = list(state.A), list(state.G), list(state.diagonal)
        for i, (layer, p, r, dy) in enumerate(zip(backward.layers, params, backward.residuals, dys)):
            kind = block(p)
            if kind == "kronecker":
                operands = getattr(layer, "weight_grad_operands", None)
                if not callable(operands):
                    raise TypeError(
                        f"jbp.kfac: layers[{i}] ({type(layer).__name__}) has jbp.Layer(W, b) parameters but no "
                        "weight_grad_operands(params, residuals, dy) method, which its Kronecker factors need "
                        "(see jbp.layers.protocol)")
                A_batch, G_batch = factors(*operands(p, r, dy), backward.scale, self.approximation)
                A[i], G[i] = average(state.A[i], A_batch), average(state.G[i], G_batch)
            elif kind == "blocks":
                if self.adaptive:
                    raise ValueError(f"jbp.kfac(adaptive=True): layers[{i}] ({type(layer).__name__}) has several "
                                     "weight blocks, which the adaptive step's quadratic model does not support; "
                                     "use adaptive=False")
                batch_factors = [factors(a, d, backward.scale, self.approximation, bias is not None)
                                 for (a, d), (_, bias) in zip(block_operands(i, layer, p, r, dy), weight_blocks(p))]
                A[i] = average(state.A[i], tuple(f[0] for f in batch_factors))
                G[i] = average(state.G[i], tuple(f[1] for f in batch_factors))
            elif kind == "fallback" and self.fallback == "diagonal":
                diagonal[i] = average(state.diagonal[i], diagonal_fisher(layer, p, r, dy, backward.scale))
        A_inv, G_inv, stats = jax.lax.cond(
            state.count % self.inverse_every == 0,
            lambda: self._invert(A, G, state.stats, state.damping),
            lambda: (state.A_inv, state.G_inv, state.stats),
        )
        updates = []
        for i, (p, g) in enumerate(zip(params, grads)):
            kind = block(p)
            if kind == "kronecker":
                updates.append(precondition(g, A_inv[i], G_inv[i]))
            elif kind == "blocks":
                updates.append(precondition_blocks(g, weight_blocks(p), A_inv[i], G_inv[i]))
            elif kind == "fallback" and self.fallback == "diagonal":
                updates.append(jax.tree.map(lambda gi, d: gi / (d + state.damping), g, diagonal[i]))
            else:
                updates.append(g)
        updates = tuple(updates)
        norms = jnp.stack([_norm(u) for u in updates]).astype(stats.update_norm.dtype)
        state = state._replace(count=state.count + 1, key=key, A=tuple(A), G=tuple(G), A_inv=A_inv, G_inv=G_inv,
                               diagonal=tuple(diagonal), stats=stats._replace(update_norm=norms))
        if self.adaptive:
            return self._adapt(grads, updates, state, params, backward, dys, full)
        updates, inner = self.chain().update(updates, state.inner, params)
        return updates, state._replace(inner=inner)

    def _adapt(self, grads, preconditioned, state: KFACState, params, backward: bw.Backward, dys,
               full: bw.Backward):
        """``adaptive=True``: the step ``α Δ + μ δ_prev`` from the quadratic model (its
        curvature from ``backward``'s rows and ``dys``), and the damping by the
        Levenberg-Marquardt rule every ``damping_every`` steps (the loss on ``full``'s batch)."""
        delta = jax.tree.map(jnp.negative, preconditioned)  # Δ = −F̃⁻¹ g
        vectors = (delta, state.velocity)
        C = fisher_gram(backward.layers, params, backward.residuals, dys, backward.scale, vectors)
        D = jnp.array([[_dot(u, v) for v in vectors] for u in vectors])
        b = jnp.stack([_dot(grads, v) for v in vectors])
        dtype = state.damping.dtype
        (alpha, mu), change = quadratic_model(C.astype(dtype), D.astype(dtype), b.astype(dtype), state.damping)
        step = jax.tree.map(lambda d, v: alpha.astype(d.dtype) * d + mu.astype(d.dtype) * v, delta, state.velocity)

        def measure():  # one more forward pass on the same batch
            rho = ((full.loss_at(optax.apply_updates(params, step)) - full.loss) / change).astype(dtype)
            decay = self.damping_decay ** self.damping_every
            return rho, jnp.clip(levenberg_marquardt(state.damping, rho, decay), *self.damping_bounds).astype(dtype)

        rho, damping = jax.lax.cond((state.count - 1) % self.damping_every == 0, measure,
                                    lambda: (state.quad.rho, state.damping))
        quad = KFACQuad(alpha.astype(dtype), mu.astype(dtype), change.astype(dtype), rho)
        return step, state._replace(damping=damping, velocity=step, quad=quad)

    @staticmethod
    def _invert_one(a: Array, g: Array, damping) -> tuple:
        """``(A_inv, G_inv, damping_A, damping_G, cond_A, cond_G)`` of one block."""
        da, dg = pi_damping(a, g, damping)
        ai, ca = damped_inverse(a, da)
        gi, cg = damped_inverse(g, dg)
        return ai, gi, da, dg, ca, cg

    def _invert(self, A: list, G: list, stats: KFACStats, damping):
        """The damped factors' inverses, and the damping and conditions in ``stats``."""
        A_inv, G_inv, dA, dG, cA, cG = [], [], [], [], [], []
        for i, (a, g) in enumerate(zip(A, G)):
            if isinstance(a, tuple) and a:  # several blocks: the largest of each statistic
                inverted = [self._invert_one(ab, gb, damping) for ab, gb in zip(a, g)]
                A_inv.append(tuple(v[0] for v in inverted)), G_inv.append(tuple(v[1] for v in inverted))
                for out, k in ((dA, 2), (dG, 3), (cA, 4), (cG, 5)):
                    out.append(jnp.max(jnp.stack([v[k] for v in inverted])))
                continue
            if isinstance(a, tuple):  # no Kronecker block
                A_inv.append(())
                G_inv.append(())
                dA.append(stats.damping_A[i]), dG.append(stats.damping_G[i])
                cA.append(stats.cond_A[i]), cG.append(stats.cond_G[i])
                continue
            ai, gi, da, dg, ca, cg = self._invert_one(a, g, damping)
            A_inv.append(ai), G_inv.append(gi)
            dA.append(da), dG.append(dg), cA.append(ca), cG.append(cg)
        dtype = stats.damping_A.dtype
        stack = lambda xs: jnp.stack(xs).astype(dtype)
        return tuple(A_inv), tuple(G_inv), stats._replace(damping_A=stack(dA), damping_G=stack(dG),
                                                          cond_A=stack(cA), cond_G=stack(cG))


def kfac(
    learning_rate: Union[float, Callable] = 0.1,
    *,
    damping: float = 0.1,
    ema: float = 0.95,
    inverse_every: int = 10,
    fisher: str = "sampled",
    momentum: Optional[float] = 0.9,
    weight_decay: float = 0.0,
    fallback: str = "diagonal",
    seed: int = 0,
    then: Optional[optax.GradientTransformation] = None,
    adaptive: bool = False,
    damping_every: int = 5,
    damping_decay: float = 0.95,
    damping_bounds: tuple = (1e-8, 1e8),
    statistics_batch: Optional[int] = None,
    approximation: str = "expand",
) -> KFAC:
    """K-FAC (Martens and Grosse 2015; KFC for convolutions): an optimizer for
    :func:`jbp.fit`, :func:`jbp.train_step`, :func:`jbp.fit_stream` and checkpoints.

    Each step: each layer's factors ``A = E[x̄ x̄ᵀ]`` and ``G = E[δ δᵀ]`` from the step's
    backward pass (module docstring), moving averages, π-damped inverses every
    ``inverse_every`` steps, the update ``G⁻¹ dW̄ A⁻¹``, then the optax chain.

    Example::

      net = jbp.MLP((64, 32, 10), activation="tanh", loss="cross_entropy")
      params, history = jbp.fit(net, net.init(jax.random.key(0)), x, y,
                                optimizer=jbp.kfac(0.1), epochs=10, batch_size=64, key=key)

    Args:
      learning_rate: the step size of the default chain ``sgd(learning_rate,
        momentum)`` (a float or an optax schedule); unused with ``then``.
      damping: ``λ`` of Tikhonov damping ``F + λ I`` (split by π between the factors;
        added to the diagonal fallback).
      ema: the factors' moving-average decay, in ``[0, 1)``.
      inverse_every: recompute the inverses every this many steps (the first step always).
      fisher: ``"sampled"`` (targets drawn from the model: the true Fisher, one extra
        backward pass) or ``"empirical"`` (the data's targets; see the module docstring).
      momentum: of the default chain (``None``: none).
      weight_decay: decoupled weight decay of the default chain (``add_decayed_weights``).
      fallback: a layer without a Kronecker block: ``"diagonal"`` (diagonal Fisher) or
        ``"gradient"`` (left as it is).
      seed: of the sampled targets' PRNG key, kept in the state.
      then: an optax chain in place of the default one, taking the preconditioned
        update (e.g. ``optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))``).
      adaptive: Martens and Grosse's step (module docstring): the learning rate and
        momentum from the quadratic model each step, ``damping`` its initial value,
        adapted by the Levenberg-Marquardt rule; ``learning_rate`` and ``momentum``
        are then unused, and ``then`` and ``weight_decay`` refused.
      damping_every: with ``adaptive``, measure the reduction ratio (one more forward
        pass) and adapt the damping every this many steps.
      damping_decay: ``ω`` per step: the damping moves by ``ω ** damping_every``.
      damping_bounds: ``(low, high)``, the adapted damping's range.
      statistics_batch: the factors, the diagonal Fisher and the quadratic model's
        curvature from the first this many rows of each batch (``None``: all rows); the
        gradient and the loss keep the whole batch. Training shuffles the rows, so these
        are a fresh sample each step; the curvature's cost falls in proportion.
      approximation: the factors of a weight shared by positions (a sequence's, a
        convolution's, attention's projections, a recurrent layer's ``W`` and ``U``):
        ``"expand"`` (each position an example) or ``"reduce"`` (positions summed
        first), Eschenhagen et al. 2023 (:func:`factors`). :meth:`KFAC.describe` says
        which layers have such blocks.

    Returns:
      a :class:`KFAC`.
    """
    return KFAC(learning_rate, damping, ema, inverse_every, fisher, momentum, weight_decay, fallback, seed, then,
                adaptive, damping_every, damping_decay, damping_bounds, statistics_batch, approximation)
