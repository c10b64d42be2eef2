"""Point sets: weight points written as coefficients times a few basis vectors.

Almost every object of the papers this library implements (lines, planes, polygonal chains,
Bezier curves, Arc paths, ensembles) is a set of K points in weight space

.. math::

    w_k = \\sum_{j=1}^{J} C_{kj}\\, B_j, \\qquad k = 1..K,

with a basis ``B`` of J weight vectors sharing one :class:`~landscape.weights.Layout`
and a coefficient matrix ``C`` of shape ``[K, J]``. Paths that are not linear in a fixed basis
produce their points explicitly: an identity coefficient matrix.

Memory: a basis given as :class:`~landscape.weights.Weights` (checkpoints as loaded) is
referenced, not copied, and keeps its dtype; points are assembled entry by entry (one named
tensor at a time, from that entry of each basis vector), so evaluating a line through two large
checkpoints needs the checkpoints plus the points being evaluated, never a stacked copy.
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
    basis : Tensor[J, P] or sequence of Weights
        J weight vectors: flattened (floating-point entries of the layout, in layout order),
        or :class:`~landscape.weights.Weights` (mappings of named tensors) that are referenced
        as they are, in their own dtype.
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
    A point is ``sum_j C[k, j] B_j`` entry by entry, summed over the non-zero coefficients in
    basis order in the basis dtype (or the dtype asked for). A coefficient row that selects one
    basis vector (a single 1, zeros elsewhere) reproduces that vector bit for bit: it is
    copied, not multiplied.

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
        basis,
        coeffs,
        layout: Layout,
        *,
        extras: dict[str, torch.Tensor] | None = None,
        names: Sequence[str] | None = None,
    ):
        if torch.is_tensor(basis):
            if basis.dim() != 2:
                raise ValueError(f"basis should be a 2d tensor [J, P], got {basis.dim()}D")
            if basis.shape[1] != layout.size:
                raise ValueError(f"basis vectors have {basis.shape[1]} values but the layout has {layout.size}")
            self._flat: torch.Tensor | None = basis
            self._vectors: list | None = None
            J = basis.shape[0]
        else:
            vectors = list(basis)
            if not vectors:
                raise ValueError("a point set needs at least one basis vector, got none")
            for j, v in enumerate(vectors):
                for e in layout.flat_entries():
                    if e.name not in v or tuple(v[e.name].shape) != e.shape:
                        got = tuple(v[e.name].shape) if e.name in v else "nothing"
                        raise ValueError(f"basis vector {j} has {got} for '{e.name}'; the layout has {e.shape}")
            self._flat, self._vectors = None, vectors
            J = len(vectors)
        coeffs = torch.as_tensor(np.asarray(coeffs, dtype=np.float64) if not torch.is_tensor(coeffs) else coeffs)
        coeffs = coeffs.to(torch.float64)
        if coeffs.dim() == 1:
            coeffs = coeffs[None]
        if coeffs.dim() != 2 or coeffs.shape[1] != J:
            raise ValueError(f"coeffs should have shape [K, {J}] for a basis of {J} vectors, got {list(coeffs.shape)}")
        self.coeffs = coeffs.cpu()
        self.layout = layout
        self.extras = dict(extras or {})
        missing = [e.name for e in layout.carried() if e.name not in self.extras]
        if missing:
            raise ValueError(f"extras lack the non-float entries {missing[:3]}")
        self.names = list(names) if names is not None else [f"b{j}" for j in range(J)]
        if len(self.names) != J:
            raise ValueError(f"{len(self.names)} names for {J} basis vectors")

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
        """Basis from several :class:`Weights` of one layout, referenced without a copy
        (``dtype``: cast copies instead); identity coefficients when ``coeffs`` is None (the
        explicit-points case)."""
        if not basis:
            raise ValueError("a point set needs at least one basis vector, got none")
        layout = basis[0].layout
        for i, w in enumerate(basis[1:], 1):
            if w.layout.names() != layout.names():
                raise ValueError(f"basis vector {i} has a different layout from basis vector 0")
        if dtype is not None:
            basis = [w.to(dtype=dtype) for w in basis]
        if coeffs is None:
            coeffs = torch.eye(len(basis), dtype=torch.float64)
        extras = {e.name: basis[0][e.name] for e in layout.carried()}
        return cls(list(basis), coeffs, layout, extras=extras, names=names)

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
        return self.coeffs.shape[1]

    @property
    def P(self) -> int:
        """Length of a flattened weight vector."""
        return self.layout.size

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the basis (of its first floating-point entry)."""
        if self._flat is not None:
            return self._flat.dtype
        first = self.layout.flat_entries()
        return self._vectors[0][first[0].name].dtype if first else torch.float32

    @property
    def device(self) -> torch.device:
        if self._flat is not None:
            return self._flat.device
        first = self.layout.flat_entries()
        return self._vectors[0][first[0].name].device if first else torch.device("cpu")

    @property
    def basis(self) -> torch.Tensor:
        """The basis as one ``Tensor[J, P]`` (a new tensor when the basis is held as Weights:
        prefer :meth:`entry` and :meth:`tensors` for large models)."""
        if self._flat is not None:
            return self._flat
        entries = self.layout.flat_entries()
        if not entries:
            return torch.zeros(self.J, 0)
        dtype = self.dtype
        return torch.stack([torch.cat([v[e.name].reshape(-1).to(dtype) for e in entries]) for v in self._vectors])

    def __len__(self) -> int:
        return self.K

    def __repr__(self) -> str:
        return f"PointSet(K={self.K}, J={self.J}, P={self.P}, names={self.names})"

    # ------------------------------------------------------------------ derived sets
    def _same_basis(self, coeffs) -> PointSet:
        basis = self._flat if self._flat is not None else self._vectors
        return PointSet(basis, coeffs, self.layout, extras=self.extras, names=self.names)

    def subset(self, indices) -> PointSet:
        """The points at ``indices`` (same basis)."""
        return self._same_basis(self.coeffs[torch.as_tensor(np.asarray(indices, dtype=np.int64))])

    def with_coeffs(self, coeffs) -> PointSet:
        """Same basis, other coefficients."""
        return self._same_basis(coeffs)

    def to(self, device=None, dtype: torch.dtype | None = None) -> PointSet:
        """Basis moved/cast (coefficients stay float64 on the CPU)."""
        if self._flat is not None:
            basis = self._flat.to(device=device, dtype=dtype)
        else:
            basis = [
                {e.name: v[e.name].to(device=device, dtype=dtype) for e in self.layout.flat_entries()}
                for v in self._vectors
            ]
        return PointSet(
            basis,
            self.coeffs,
            self.layout,
            extras={k: v.to(device) for k, v in self.extras.items()},
            names=self.names,
        )

    # ------------------------------------------------------------------ materialising
    def _rows(self, indices) -> torch.Tensor:
        if indices is None:
            return self.coeffs
        return self.coeffs[torch.as_tensor(np.asarray(indices, dtype=np.int64))]

    def _entry_vectors(self, e) -> list[torch.Tensor]:
        """The J basis values of entry ``e``, each flattened (views, no copies)."""
        if self._flat is not None:
            return list(self._flat[:, e.slice])
        return [v[e.name].reshape(-1) for v in self._vectors]

    def flat(self, indices=None, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Flattened points ``Tensor[k, P]`` for ``indices`` (all points when None)."""
        C = self._rows(indices)
        terms = _terms(C)
        out = torch.empty(C.shape[0], self.P, dtype=dtype or self.dtype, device=self.device)
        for e in self.layout.flat_entries():
            _combine(terms, self._entry_vectors(e), out[:, e.slice])
        return out

    def entry(self, name: str, indices=None, *, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One floating-point entry of the points, ``Tensor[k, *shape]``, from that entry of
        the basis only (what :meth:`tensors` gives for ``name``, without forming the others)."""
        e = self.layout[name]
        if not e.flat:
            raise ValueError(f"entry '{name}' is not a floating-point tensor")
        return self._entry(e, _terms(self._rows(indices)), dtype)

    def _entry(self, e, terms, dtype) -> torch.Tensor:
        vecs = self._entry_vectors(e)
        out = torch.empty(len(terms), e.numel, dtype=dtype or vecs[0].dtype, device=vecs[0].device)
        _combine(terms, vecs, out)
        return out.view(len(terms), *e.shape)

    def tensors(self, indices=None, *, dtype: torch.dtype | None = None) -> OrderedDict[str, torch.Tensor]:
        """Named tensors of the points, each ``Tensor[k, *shape]``, built entry by entry;
        non-float entries are the extras expanded to ``[k, *shape]``. Aliases of tied tensors
        are left out: this is what :func:`torch.func.functional_call` takes (it ties them
        itself)."""
        terms = _terms(self._rows(indices))
        k = len(terms)
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        for e in self.layout:
            if e.flat:
                out[e.name] = self._entry(e, terms, dtype)
            elif e.tied_to is None:
                x = self.extras[e.name].to(self.device)
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
        B = torch.stack(self._entry_vectors(e))
        if dtype is not None:
            B = B.to(dtype)
        return B.reshape(self.J, *e.shape).contiguous()

    def gram(self, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``B B^T`` in float64 (``Tensor[J, J]``), optionally over a mask of the flat vector;
        squared norms of points are then ``c^T G c``. Computed entry by entry in blocks, so
        no float64 copy of the basis is made."""
        G = torch.zeros(self.J, self.J, dtype=torch.float64)
        for e in self.layout.flat_entries():
            vecs = self._entry_vectors(e)
            if mask is not None:
                m = mask[e.slice].to(vecs[0].device)
                if not bool(m.any()):
                    continue
                if not bool(m.all()):
                    vecs = [v[m] for v in vecs]
            for start in range(0, vecs[0].numel(), _BLOCK):
                B = torch.stack([v[start : start + _BLOCK] for v in vecs]).to(torch.float64)
                G += (B @ B.T).cpu()
        return G


_BLOCK = 1 << 22


def _terms(C: torch.Tensor) -> list[list[tuple[int, float]]]:
    """The non-zero ``(j, C[k, j])`` of every row, in basis order."""
    rows, cols = torch.nonzero(C, as_tuple=True)
    terms: list[list[tuple[int, float]]] = [[] for _ in range(C.shape[0])]
    for r, j, c in zip(rows.tolist(), cols.tolist(), C[rows, cols].tolist(), strict=True):
        terms[r].append((j, c))
    return terms


def _combine(C, vectors: list[torch.Tensor], out: torch.Tensor) -> None:
    """``out[k] = sum_j C[k, j] vectors[j]`` (``C[k, J]`` float64 on the CPU, or its
    :func:`_terms`; ``out[k, m]``) in ``out``'s dtype, summed over the non-zero coefficients in
    basis order; rows of ``C`` that select one basis vector are copies of it, bit for bit."""
    terms = _terms(C) if torch.is_tensor(C) else C
    with torch.autocast(device_type=out.device.type, enabled=False), torch.no_grad():
        for r, row_terms in enumerate(terms):
            row = out[r]
            if not row_terms:
                row.zero_()
                continue
            (j0, c0), rest = row_terms[0], row_terms[1:]
            if c0 == 1.0:
                row.copy_(vectors[j0])
            else:
                torch.mul(vectors[j0].to(row.dtype), c0, out=row)
            for j, c in rest:
                row.add_(vectors[j].to(row.dtype), alpha=c)
