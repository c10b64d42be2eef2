"""Point sets: weight points written as coefficients times a few basis vectors.

Almost every object of the papers this library implements (lines, planes, polygonal chains,
Bezier curves, Arc paths, ensembles) is a set of K points in weight space

.. math::

    w_k = \\sum_{j=1}^{J} C_{kj}\\, B_j, \\qquad k = 1..K,

with a basis ``B`` of J flattened weight vectors sharing one :class:`~landscape.weights.Layout`
and a coefficient matrix ``C`` of shape ``[K, J]``. Paths that are not linear in a fixed basis
produce their points explicitly: an identity coefficient matrix.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch

from .weights import Layout, Weights

__all__ = ["PointSet"]


class PointSet:
    """K weight points as ``coeffs @ basis``.

    Parameters
    ----------
    basis : Tensor[J, P]
        Flattened weight vectors (floating-point entries of the layout, in layout order).
    coeffs : Tensor[K, J] or array-like
        Coefficients of each point; stored in float64.
    layout : Layout
        Names, shapes and kinds of the entries.
    extras : dict of str to Tensor, optional
        Entries that are not combined (``num_batches_tracked`` and integer buffers); taken
        from the first basis vector by :meth:`from_weights`.
    names : list of str, optional
        A name for each basis vector (e.g. ``["w", "d1", "d2"]``).

    Notes
    -----
    A coefficient row that selects one basis vector (a single 1, zeros elsewhere)
    reproduces that vector bit for bit: such rows are copied, not multiplied.

    Examples
    --------
    >>> import torch, landscape as ls
    >>> a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    >>> wa, wb = ls.Weights.from_module(a), ls.Weights.from_module(b)
    >>> line = ls.PointSet.from_weights([wa, wb], [[1 - t, t] for t in (0.0, 0.5, 1.0)])
    >>> line.K, line.J
    (3, 2)
    >>> torch.equal(line.point(2)["weight"], b.weight.detach())
    True
    """

    def __init__(
        self,
        basis: torch.Tensor,
        coeffs,
        layout: Layout,
        *,
        extras: dict[str, torch.Tensor] | None = None,
        names: Sequence[str] | None = None,
    ):
        if basis.dim() != 2:
            raise ValueError(f"basis should be a 2d tensor [J, P], got {basis.dim()}D")
        if basis.shape[1] != layout.size:
            raise ValueError(f"basis vectors have {basis.shape[1]} values but the layout has {layout.size}")
        coeffs = torch.as_tensor(np.asarray(coeffs, dtype=np.float64) if not torch.is_tensor(coeffs) else coeffs)
        coeffs = coeffs.to(torch.float64)
        if coeffs.dim() == 1:
            coeffs = coeffs[None]
        if coeffs.dim() != 2 or coeffs.shape[1] != basis.shape[0]:
            raise ValueError(
                f"coeffs should have shape [K, {basis.shape[0]}] for a basis of "
                f"{basis.shape[0]} vectors, got {list(coeffs.shape)}"
            )
        self.basis = basis
        self.coeffs = coeffs.cpu()
        self.layout = layout
        self.extras = dict(extras or {})
        missing = [e.name for e in layout.carried() if e.name not in self.extras]
        if missing:
            raise ValueError(f"extras lack the non-float entries {missing[:3]}")
        self.names = list(names) if names is not None else [f"b{j}" for j in range(basis.shape[0])]
        if len(self.names) != basis.shape[0]:
            raise ValueError(f"{len(self.names)} names for {basis.shape[0]} basis vectors")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_weights(
        cls,
        basis: Sequence[Weights],
        coeffs=None,
        *,
        names: Sequence[str] | None = None,
        dtype: torch.dtype | None = None,
    ) -> PointSet:
        """Basis from several :class:`Weights` of one layout; identity coefficients when
        ``coeffs`` is None (the explicit-points case)."""
        if not basis:
            raise ValueError("a point set needs at least one basis vector, got none")
        layout = basis[0].layout
        for i, w in enumerate(basis[1:], 1):
            if w.layout.names() != layout.names():
                raise ValueError(f"basis vector {i} has a different layout from basis vector 0")
        B = torch.stack([w.flatten(dtype) for w in basis])
        if coeffs is None:
            coeffs = torch.eye(len(basis), dtype=torch.float64)
        extras = {e.name: basis[0][e.name] for e in layout.carried()}
        return cls(B, coeffs, layout, extras=extras, names=names)

    @classmethod
    def explicit(cls, points: Sequence[Weights], names: Sequence[str] | None = None) -> PointSet:
        """Points given one by one (identity coefficients)."""
        return cls.from_weights(points, None, names=names)

    # ------------------------------------------------------------------ properties
    @property
    def K(self) -> int:
        """Number of points."""
        return self.coeffs.shape[0]

    @property
    def J(self) -> int:
        """Number of basis vectors."""
        return self.basis.shape[0]

    @property
    def P(self) -> int:
        """Length of a flattened weight vector."""
        return self.basis.shape[1]

    def __len__(self) -> int:
        return self.K

    def __repr__(self) -> str:
        return f"PointSet(K={self.K}, J={self.J}, P={self.P}, names={self.names})"

    # ------------------------------------------------------------------ derived sets
    def subset(self, indices) -> PointSet:
        """The points at ``indices`` (same basis)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return PointSet(self.basis, self.coeffs[idx], self.layout, extras=self.extras, names=self.names)

    def with_coeffs(self, coeffs) -> PointSet:
        """Same basis, other coefficients."""
        return PointSet(self.basis, coeffs, self.layout, extras=self.extras, names=self.names)

    def to(self, device=None, dtype: torch.dtype | None = None) -> PointSet:
        """Basis moved/cast (coefficients stay float64 on the CPU)."""
        return PointSet(
            self.basis.to(device=device, dtype=dtype),
            self.coeffs,
            self.layout,
            extras={k: v.to(device) for k, v in self.extras.items()},
            names=self.names,
        )

    # ------------------------------------------------------------------ materialising
    def flat(self, indices=None, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Flattened points ``Tensor[k, P]`` for ``indices`` (all points when None).

        One matrix product ``C[indices] @ B`` (for sparse coefficients over a large basis, as
        on OT swap paths with two non-zeros per row, a sum over the non-zeros only); rows that
        select a single basis vector are copied from it exactly.
        """
        C = self.coeffs if indices is None else self.coeffs[torch.as_tensor(np.asarray(indices, dtype=np.int64))]
        return _combine(C, self.basis if dtype is None else self.basis.to(dtype))

    def entry(self, name: str, indices=None, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One floating-point entry of the points, ``Tensor[k, *shape]``, from that entry's
        columns of the basis only (what :meth:`tensors` gives for ``name``, without forming
        the other entries)."""
        e = self.layout[name]
        if not e.flat:
            raise ValueError(f"entry '{name}' is not a floating-point tensor")
        C = self.coeffs if indices is None else self.coeffs[torch.as_tensor(np.asarray(indices, dtype=np.int64))]
        B = self.basis[:, e.slice]
        out = _combine(C, B if dtype is None else B.to(dtype))
        return out.view(out.shape[0], *e.shape)

    def tensors(self, indices=None, *, dtype: torch.dtype | None = None) -> OrderedDict[str, torch.Tensor]:
        """Named tensors of the points, each ``Tensor[k, *shape]``; non-float entries are
        the extras expanded to ``[k, *shape]``. Aliases of tied tensors are left out: this is
        what :func:`torch.func.functional_call` takes (it ties them itself)."""
        flat = self.flat(indices, dtype=dtype)
        k = flat.shape[0]
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for e in self.layout:
            if e.flat:
                out[e.name] = flat[:, e.slice].view(k, *e.shape)
            elif e.tied_to is None:
                x = self.extras[e.name].to(flat.device)
                out[e.name] = x.expand(k, *x.shape)
        return out

    def point(self, k: int, *, dtype: torch.dtype | None = None) -> OrderedDict[str, torch.Tensor]:
        """Named tensors of point ``k`` (a state_dict of the model at that point; aliases of
        tied tensors hold the tensor of the name they are tied to)."""
        out = OrderedDict((n, t[0]) for n, t in self.tensors([k], dtype=dtype).items())
        aliases = self.layout.aliases()
        return OrderedDict((e.name, out[aliases.get(e.name, e.name)]) for e in self.layout)

    def weights(self, k: int) -> Weights:
        """Point ``k`` as :class:`Weights`."""
        return Weights({n: t.clone() for n, t in self.point(k).items()}, self.layout)

    def basis_tensor(self, name: str, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The basis restricted to one entry: ``Tensor[J, *shape]`` (contiguous)."""
        e = self.layout[name]
        if not e.flat:
            raise ValueError(f"entry '{name}' is not a floating-point tensor and has no basis")
        B = self.basis[:, e.slice]
        if dtype is not None:
            B = B.to(dtype)
        return B.reshape(self.J, *e.shape).contiguous()

    def gram(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``B B^T`` in float64 (``Tensor[J, J]``), optionally over a mask of the flat vector;
        squared norms of points are then ``c^T G c``."""
        B = self.basis if mask is None else self.basis[:, mask.to(self.basis.device)]
        B = B.to(torch.float64)
        return (B @ B.T).cpu()


def _combine(C: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``C @ B`` (``C[k, J]`` float64 on the CPU, ``B[J, P]``) in ``B``'s dtype; rows of ``C``
    that select one basis vector are copies of it, bit for bit. Sparse ``C`` over a large
    basis (OT swap paths: two non-zeros per row) is summed over its non-zeros only."""
    with torch.autocast(device_type=B.device.type, enabled=False):  # weights in full precision
        nz = C != 0
        if C.shape[1] > 8 and int(nz.sum()) * 4 <= C.numel():
            rows, cols = torch.nonzero(nz, as_tuple=True)
            vals = C[rows, cols].to(device=B.device, dtype=B.dtype)
            out = torch.zeros(C.shape[0], B.shape[1], dtype=B.dtype, device=B.device)
            out.index_add_(0, rows.to(B.device), B[cols.to(B.device)] * vals[:, None])
        else:
            out = C.to(device=B.device, dtype=B.dtype) @ B
    onehot = (C == 1).sum(1) == 1
    onehot &= ((C == 0) | (C == 1)).all(1)
    for r in torch.nonzero(onehot).flatten().tolist():
        out[r] = B[int(torch.argmax(C[r]))]
    return out
