"""Reverse-mode automatic differentiation on a computation graph, in NumPy.

Every `Tensor` made by an operation remembers its *parents* (the tensors it was computed from)
and a *backward rule*: a small function that turns the gradient of the loss with respect to the
output into gradients with respect to each parent (the local step of the chain rule).
`Tensor.backward` orders the graph so that every node comes after all the nodes it feeds
(reverse topological order) and applies the rules one node at a time. A node used twice
(``x * x``) receives one contribution per use and they are added up.

Operations broadcast like NumPy. Broadcasting copies a value along an axis, so the backward
rule sums the gradient back over that axis (`unbroadcast`).

Example
-------
>>> x = Tensor([1.0, 2.0], requires_grad=True)
>>> y = (x * x + x).sum()
>>> y.backward()
>>> x.grad
array([3., 5.])
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable

import numpy as np

_GRAD_ENABLED = True


@contextlib.contextmanager
def no_grad():
    """Compute without recording the graph (evaluation, parameter updates)."""
    global _GRAD_ENABLED
    previous, _GRAD_ENABLED = _GRAD_ENABLED, False
    try:
        yield
    finally:
        _GRAD_ENABLED = previous


def _as_array(value, dtype=None) -> np.ndarray:
    arr = np.asarray(value, dtype=dtype)
    if dtype is None and arr.dtype.kind not in "f":
        arr = arr.astype(np.float64)  # integers and booleans become float64
    return arr


class Tensor:
    """A node of the computation graph: a NumPy array, its gradient, and how it was made.

    Parameters
    ----------
    data : array_like
        The value. Floating-point arrays keep their dtype (float32 for speed, float64 for
        gradient checks); anything else becomes float64.
    requires_grad : bool
        Whether `backward` should compute ``d loss / d self``. Set for parameters and inputs of
        interest; results of operations need it when any parent does.
    parents : tuple of Tensor
        The tensors this one was computed from (empty for leaves).
    backward_rule : callable, optional
        ``rule(grad) -> tuple`` of gradients, one per parent (``None`` for a parent that needs
        none), given the gradient with respect to this tensor.
    op : str
        Name of the operation, for printing the graph.

    Attributes
    ----------
    grad : numpy.ndarray or None
        Accumulated gradient after `backward` (of leaves, and of interior nodes marked with
        `retain_grad`); reset it with `zero_grad`.
    """

    def __init__(self, data, requires_grad: bool = False, parents: tuple = (), backward_rule: Callable | None = None, op: str = ""):
        self.data = _as_array(data)
        self.requires_grad = bool(requires_grad)
        self.grad: np.ndarray | None = None
        self.parents = parents
        self.backward_rule = backward_rule
        self.op = op
        self.keep_grad = False

    # -- basic properties -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        made = f", op={self.op!r}" if self.op else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{made}, requires_grad={self.requires_grad})"

    def numpy(self) -> np.ndarray:
        """The value as a plain array (shared, not copied)."""
        return self.data

    def item(self) -> float:
        """The value of a one-element tensor as a Python float."""
        return float(self.data.item())

    def zero_grad(self) -> None:
        self.grad = None

    def retain_grad(self) -> "Tensor":
        """Keep this interior node's gradient in ``.grad`` after `backward` (leaves always keep it)."""
        self.keep_grad = True
        return self

    # -- the chain rule ------------------------------------------------------------------------
    def backward(self, grad=None) -> None:
        """Compute gradients of this tensor with respect to every tensor it depends on.

        Parameters
        ----------
        grad : array_like, optional
            ``d L / d self`` for some outer quantity L. Defaults to 1 for a scalar (so the
            result is ``d self / d x``); required for a non-scalar tensor.

        Notes
        -----
        Gradients *accumulate* into ``.grad`` (so a node used twice gets both contributions,
        and two calls add up); call `zero_grad` on parameters between steps.
        """
        if grad is None:
            if self.data.size != 1:
                raise ValueError(f"backward() of a tensor of shape {self.shape} needs an explicit grad")
            grad = np.ones_like(self.data)
        grad = np.broadcast_to(_as_array(grad, self.dtype), self.shape)
        order = _topological_order(self)
        pending = {id(self): grad}  # gradients of interior nodes, freed once used
        for node in reversed(order):
            g = pending.pop(id(node), None)
            if g is None:
                continue
            if not node.parents or node.keep_grad:  # leaves keep their gradient
                node.grad = g.copy() if node.grad is None else node.grad + g
            if not node.parents:
                continue
            for parent, parent_grad in zip(node.parents, node.backward_rule(g)):
                if parent_grad is None or not parent.requires_grad:
                    continue
                key = id(parent)
                pending[key] = parent_grad if key not in pending else pending[key] + parent_grad

    # -- operators, so formulas read like maths -------------------------------------------------
    def __add__(self, other):
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        return sub(self, other)

    def __rsub__(self, other):
        return sub(other, self)

    def __mul__(self, other):
        return mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        return div(self, other)

    def __rtruediv__(self, other):
        return div(other, self)

    def __neg__(self):
        return neg(self)

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)

    def sum(self, axis=None, keepdims: bool = False):
        return tsum(self, axis, keepdims)

    def mean(self, axis=None, keepdims: bool = False):
        return mean(self, axis, keepdims)

    def reshape(self, *shape):
        return reshape(self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape)


def _topological_order(root: Tensor) -> list[Tensor]:
    """Nodes reachable from `root`, each after all of its parents (iterative depth-first search)."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for parent in node.parents:
            if parent.requires_grad and id(parent) not in seen:
                stack.append((parent, False))
    return order


def as_tensor(value, dtype=None) -> Tensor:
    """`value` itself if it is a Tensor, else a constant Tensor (no gradient) holding it."""
    if isinstance(value, Tensor):
        return value
    return Tensor(_as_array(value, dtype))


def make(data: np.ndarray, parents: Iterable[Tensor], rule: Callable, op: str) -> Tensor:
    """Build the result of an operation, recording the graph only when a gradient is needed.

    This is the one function through which every operation in this package creates its output.
    """
    parents = tuple(parents)
    needs_grad = _GRAD_ENABLED and any(p.requires_grad for p in parents)
    if not needs_grad:
        return Tensor(data, op=op)
    return Tensor(data, requires_grad=True, parents=parents, backward_rule=rule, op=op)


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `grad` down to `shape`, undoing NumPy broadcasting.

    Broadcasting prepends axes and stretches axes of length 1; each copy received part of the
    gradient, so the gradient of the original is the sum over the copies.
    """
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _pair(a, b) -> tuple[Tensor, Tensor]:
    """Two operands as tensors; a plain number takes the dtype of the tensor operand."""
    if isinstance(a, Tensor) and not isinstance(b, Tensor):
        return a, Tensor(_as_array(b, a.dtype))
    if isinstance(b, Tensor) and not isinstance(a, Tensor):
        return Tensor(_as_array(a, b.dtype)), b
    return as_tensor(a), as_tensor(b)


# -- elementary operations -----------------------------------------------------------------------
def add(a, b) -> Tensor:
    """``a + b`` with broadcasting."""
    a, b = _pair(a, b)
    return make(a.data + b.data, (a, b), lambda g: (unbroadcast(g, a.shape), unbroadcast(g, b.shape)), "add")


def sub(a, b) -> Tensor:
    """``a - b`` with broadcasting."""
    a, b = _pair(a, b)
    return make(a.data - b.data, (a, b), lambda g: (unbroadcast(g, a.shape), unbroadcast(-g, b.shape)), "sub")


def neg(a) -> Tensor:
    """``-a``."""
    a = as_tensor(a)
    return make(-a.data, (a,), lambda g: (-g,), "neg")


def mul(a, b) -> Tensor:
    """Elementwise ``a * b`` with broadcasting: d(ab)/da = b, d(ab)/db = a."""
    a, b = _pair(a, b)
    return make(a.data * b.data, (a, b), lambda g: (unbroadcast(g * b.data, a.shape), unbroadcast(g * a.data, b.shape)), "mul")


def div(a, b) -> Tensor:
    """Elementwise ``a / b``: d/da = 1/b, d/db = -a/b²."""
    a, b = _pair(a, b)
    out = a.data / b.data

    def rule(g):
        return unbroadcast(g / b.data, a.shape), unbroadcast(-g * out / b.data, b.shape)

    return make(out, (a, b), rule, "div")


def matmul(a, b) -> Tensor:
    """Matrix product of 2-D tensors ``(n, k) @ (k, m)``: dA = G Bᵀ, dB = Aᵀ G."""
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul takes 2-D tensors, got shapes {a.shape} and {b.shape}")
    return make(a.data @ b.data, (a, b), lambda g: (g @ b.data.T, a.data.T @ g), "matmul")


def tsum(a, axis=None, keepdims: bool = False) -> Tensor:
    """Sum over `axis` (all axes by default); the gradient is copied back to every summand."""
    a = as_tensor(a)
    out = a.data.sum(axis=axis, keepdims=keepdims)

    def rule(g):
        if axis is not None and not keepdims:
            g = np.expand_dims(g, axis)
        return (np.broadcast_to(g, a.shape),)

    return make(out, (a,), rule, "sum")


def mean(a, axis=None, keepdims: bool = False) -> Tensor:
    """Mean over `axis` (all axes by default): a sum divided by the number of summands."""
    a = as_tensor(a)
    axes = range(a.ndim) if axis is None else np.atleast_1d(axis)
    count = int(np.prod([a.shape[ax] for ax in axes]))
    return tsum(a, axis, keepdims) * (1.0 / count)


def reshape(a, shape) -> Tensor:
    """The same values in a new shape; the gradient is reshaped back."""
    a = as_tensor(a)
    return make(a.data.reshape(shape), (a,), lambda g: (g.reshape(a.shape),), "reshape")


def exp(a) -> Tensor:
    """Elementwise eˣ, whose derivative is itself."""
    a = as_tensor(a)
    out = np.exp(a.data)
    return make(out, (a,), lambda g: (g * out,), "exp")


def log(a) -> Tensor:
    """Elementwise natural logarithm: d log x / dx = 1/x."""
    a = as_tensor(a)
    return make(np.log(a.data), (a,), lambda g: (g / a.data,), "log")


def absolute(a) -> Tensor:
    """Elementwise |x|, with derivative sign(x) (0 at the kink, as PyTorch does)."""
    a = as_tensor(a)
    return make(np.abs(a.data), (a,), lambda g: (g * np.sign(a.data),), "abs")
