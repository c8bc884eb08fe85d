"""Data-parallel training over a device mesh: ``jbp.fit(..., mesh=mesh)``.

Each mini-batch is split over the mesh's ``"data"`` axis; every device runs the
hand-derived forward and backward pass (BP1-BP6) on its slice, and ``lax.pmean``
averages the per-device losses and gradients. All slices have the same size, so the
average of their mean losses is the batch's mean loss and the average of their
gradients its gradient: the update (BP7 or any optax optimizer) is the single-device
one, applied identically on every device to parameters that stay replicated.

This is JAX's own machinery: ``NamedSharding`` places parameters, data and optimizer
state replicated (``P()``) on the mesh; inside the compiled loop each batch is
resharded to ``P("data")`` and ``jax.shard_map`` runs the per-device step. Across
hosts (``jax.distributed.initialize()``, one process per host) the same code runs
unchanged, each process passing the same arguments.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jbp.model import rules
from jbp.model.base import Network
from jbp.layers.params import Params

Array = jax.Array

#: The mesh axis that a batch is split over.
DATA_AXIS = "data"


class DataParallel(NamedTuple):
    """``(params, x, y) -> (loss, grads)`` that runs data parallel over ``mesh``: each
    device computes ``loss_and_grad`` (default the hand-derived ``net.loss_and_grad``) on
    its slice of the batch; under a learning ``rule`` other than backprop, the rule's
    update (:func:`jbp.rules.loss_and_update`, its feedback weights replicated) in place
    of the gradient. Hashable, so :func:`jbp.fit` takes it as a static argument."""

    net: Network
    mesh: Mesh
    loss_and_grad: Optional[Callable] = None
    rule: Any = None

    def __call__(self, params: Params, x: Array, y: Array, *, key: Optional[Array] = None,
                 train: bool = False, feedback: tuple = ()) -> tuple[Array, Params]:
        """For a network with stochastic layers (dropout), each device draws its masks
        from ``fold_in(key, device index)``: the slices get independent masks."""
        batch = NamedSharding(self.mesh, P(DATA_AXIS))
        if dict(zip(self.mesh.axis_names, self.mesh.axis_types))[DATA_AXIS] == AxisType.Explicit:
            # shard_map does not reshard its inputs on an explicit axis; on an Auto one it does
            x, y = jax.sharding.reshard(x, batch), jax.sharding.reshard(y, batch)
        key = key if self.net.stochastic else None
        per_device = lambda params, feedback, x, y, key: self._per_device(params, feedback, x, y, key, train)
        return jax.shard_map(
            per_device,
            mesh=self.mesh,
            in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS), P()),
            out_specs=(P(), P()),
        )(params, feedback, x, y, key)

    def _per_device(self, params, feedback, x, y, key, train):
        if key is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))
        if self.rule is not None and not rules.is_backprop(self.rule):  # the rule's BP3, on this slice
            p = rules.forward_backward_unchecked(self.net, self.rule, params, feedback, x, y, key, train)
            loss, grads = p.loss, p.update
        else:  # BP1-BP6 on this slice
            mode = {"key": key, "train": train} if self.net.stochastic else {}
            loss, grads = (self.loss_and_grad or self.net.loss_and_grad)(params, x, y, **mode)
        return jax.lax.pmean((loss, grads), DATA_AXIS)


def check_mesh(mesh: Any, batch_size: int) -> None:
    """Checks that ``mesh`` has a ``"data"`` axis whose size divides ``batch_size``."""
    if not isinstance(mesh, Mesh):
        raise TypeError(
            f"mesh must be a jax.sharding.Mesh (e.g. jax.make_mesh((jax.device_count(),), "
            f"('{DATA_AXIS}',))), got {type(mesh).__name__}"
        )
    if DATA_AXIS not in mesh.shape:
        raise ValueError(
            f"mesh has axes {tuple(mesh.axis_names)} but fit splits batches over an axis named "
            f"'{DATA_AXIS}'; make it with jax.make_mesh((n,), ('{DATA_AXIS}',))"
        )
    n_devices = mesh.shape[DATA_AXIS]
    if batch_size % n_devices:
        raise ValueError(
            f"batch_size={batch_size} is not a multiple of the mesh's '{DATA_AXIS}' axis size "
            f"{n_devices}: each device takes an equal slice of every batch"
        )


def replicate(mesh: Mesh, tree: Any) -> Any:
    """``tree`` (params, data, optimizer state, key) placed replicated on ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, P()))
