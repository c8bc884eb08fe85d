"""No autodiff on the manual path: only the verification package, jbp/verify/, may call JAX's
differentiation API (and jbp/model/bridge.py may register the hand-derived backward as a custom_vjp rule)."""

import ast
import pathlib

import jax
from jax._src.interpreters import partial_eval as pe
import jax.extend
import numpy as np

import jbp
from helpers import problem

AUTODIFF = {"grad", "value_and_grad", "vjp", "jvp", "linearize", "jacrev", "jacfwd", "hessian", "linear_transpose", "custom_vjp", "custom_jvp"}
#: The verification package, where autodiff is the reference.
VERIFICATION = "verify"
#: Modules that may use one part of the API, and why.
BRIDGES = {
    # registers the hand-derived backward pass as a custom_vjp rule; nothing there is differentiated
    "model/bridge.py": {"custom_vjp"},
}


def _autodiff_uses(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr in AUTODIFF and ast.unparse(node.value).startswith("jax"):
            yield f"{path.name}:{node.lineno} .{node.attr}"
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jax") and any(a.name in AUTODIFF for a in node.names):
            yield f"{path.name}:{node.lineno} import"


def test_no_autodiff_outside_verification():
    root = pathlib.Path(jbp.__file__).parent
    uses = [
        u
        for p in sorted(root.rglob("*.py"))
        if p.relative_to(root).parts[0] != VERIFICATION
        for u in _autodiff_uses(p)
        if not any(u.endswith(f" .{name}") for name in BRIDGES.get(p.relative_to(root).as_posix(), ()))
    ]
    assert uses == [], f"autodiff on the manual path: {uses}"


def test_the_scan_itself_finds_autodiff(tmp_path):
    """The scan above can fail: it flags a file that calls jax.grad."""
    bad = tmp_path / "bad.py"
    bad.write_text("import jax\ng = jax.grad(lambda x: x)\nfrom jax import vjp\n")
    assert sorted(_autodiff_uses(bad)) == ["bad.py:2 .grad", "bad.py:3 import"]


def _dots(jaxpr):
    """The dot_generals one evaluation of ``jaxpr`` runs. A ``cond`` runs one branch:
    BP5's ``lax.platform_dependent`` is one, with a branch per layout, each a single
    product; other nested jaxprs (``pjit``) run once."""
    n = 0
    for e in jaxpr.eqns:
        if e.primitive.name == "dot_general":
            n += 1
        elif e.primitive.name == "cond":
            per_branch = {_dots(b.jaxpr) for b in e.params["branches"]}
            assert len(per_branch) == 1, f"branches run different numbers of products: {per_branch}"
            n += per_branch.pop()
        else:
            for v in e.params.values():
                if isinstance(v, (jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr)):
                    n += _dots(getattr(v, "jaxpr", v))
    return n


def test_manual_jaxpr_has_no_transpose_rules():
    """The traced manual step has as many dot products as BP1, BP3 and BP5 need, no more."""
    net = jbp.MLP((3, 4, 5, 2), loss="cross_entropy")
    params, x, y = problem(net, 6, np.float64)
    jaxpr = jax.make_jaxpr(net.loss_and_grad)(params, x, y)
    # What the loss and the gradients need, as XLA compiles it (the one backward loop also
    # forms the first layer's dx, which loss_and_grad does not return; the bridge does).
    needed, _ = pe.dce_jaxpr(jaxpr.jaxpr, [True] * len(jaxpr.jaxpr.outvars))
    # 3 layers: 3 forward (BP1) + 3 weight grads (BP5) + 2 input grads (BP3)
    assert _dots(needed) == 3 + 3 + 2
    assert _dots(jaxpr.jaxpr) == 3 + 3 + 3  # and BP3 once more at the first layer, unused
