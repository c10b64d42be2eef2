"""ParaView export of a plane: VTK XML PolyData (``.vtp``)."""

from __future__ import annotations

import base64
import os
from xml.sax.saxutils import quoteattr

import numpy as np

from ._base import (
    Source,
    _finite_range,
    _read,
)


def _base64_block(data: np.ndarray) -> str:
    """VTK XML inline binary: base64 of a UInt64 byte count followed by the raw data."""
    raw = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<")).tobytes()
    return base64.b64encode(np.array([len(raw)], dtype="<u8").tobytes() + raw).decode("ascii")


def _write_text(out_path: str, text: str, *, force: bool) -> None:
    """Write ``text`` whole or not at all (:func:`landscape.io.atomic_write`)."""
    from ..io import atomic_write

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)

    atomic_write(out_path, write, force=force)


def export_vtp(
    src: Source,
    out_path: str | os.PathLike[str],
    metric: str = "train_loss",
    *,
    log: bool = False,
    zmax: float | None = None,
    force: bool = False,
) -> str:
    """Write a plane's surface as ParaView VTK XML PolyData (``.vtp``).

    Point ``i * ny + j`` (the cell's flat index) is at ``(x[i], y[j], z)`` with
    ``z`` the metric value (:math:`\\log_{10}` of it with ``log``, capped at ``zmax``);
    each grid square whose four corners are finite is one quad.  The metric itself is
    the point scalars, NaN where not computed.  Float arrays are stored as inline
    base64 binary (``format="binary"``, ``header_type="UInt64"``) because VTK's ASCII
    reader cannot read NaN; points of missing cells get the finite minimum as ``z``
    and belong to no quad.  The same file as loss-landscape's ``h52vtp`` makes, for
    ParaView renderings like Li et al. (2018), Fig. 1.

    Parameters
    ----------
    src : str, path-like or ResultFile
        A plane result (2-D grid ``(nx, ny)``, arrays ``x``, ``y``).
    out_path : str or path-like
        The ``.vtp`` file to write.
    metric : str
    log : bool
        Heights are :math:`\\log_{10}` of the metric (positive values only).
    zmax : float, optional
        Heights above ``zmax`` are set to ``zmax`` (after ``log``).
    force : bool
        Overwrite an existing ``out_path``.

    Returns
    -------
    str
        ``out_path``.

    Raises
    ------
    ValueError
        The file is a line, or ``log`` with non-positive values.
    FileExistsError
        ``out_path`` exists and ``force`` is False.
    """
    surface = _read(src)
    if len(surface.shape) != 2:
        raise ValueError(
            f"export_vtp needs a plane (2-D grid) but {surface.name} is a {surface.kind!r} result with grid "
            f"{surface.shape}; a line has no surface to export"
        )
    out_path = os.fspath(out_path)
    if os.path.lexists(out_path) and not force:
        raise FileExistsError(f"'{out_path}' already exists; pass --force to overwrite it")
    values = surface.metric(metric)
    nx, ny = surface.shape
    x, y = surface.coordinates(0), surface.coordinates(1)
    low, _ = _finite_range(surface, metric, values)
    finite = np.isfinite(values)
    heights = values.copy()
    if log:
        if low <= 0:
            raise ValueError(
                f"{surface.name}: log needs positive values but {metric!r} has minimum {low:.6g}; pass log=False"
            )
        heights[finite] = np.log10(heights[finite])
    if zmax is not None:
        heights[finite] = np.minimum(heights[finite], float(zmax))
    heights[~finite] = heights[finite].min()
    grid_x, grid_y = np.meshgrid(x, y, indexing="ij")  # (nx, ny), C-order = flat cell index
    points = np.stack([grid_x.ravel(), grid_y.ravel(), heights.ravel()], axis=1)

    ids = np.arange(nx * ny).reshape(nx, ny)
    corners = np.stack([ids[:-1, :-1], ids[1:, :-1], ids[1:, 1:], ids[:-1, 1:]], axis=-1).reshape(-1, 4)
    keep = finite.ravel()[corners].all(axis=1)
    quads = corners[keep]
    offsets = 4 * np.arange(1, len(quads) + 1)

    def ints(array: np.ndarray) -> str:
        return " ".join(str(int(v)) for v in array.ravel())

    scalars = np.ascontiguousarray(values.ravel(), dtype=np.float64)
    text = f"""<?xml version="1.0"?>
<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">
  <PolyData>
    <Piece NumberOfPoints="{nx * ny}" NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0" \
NumberOfPolys="{len(quads)}">
      <PointData Scalars={quoteattr(metric)}>
        <DataArray type="Float64" Name={quoteattr(metric)} NumberOfComponents="1" format="binary">
          {_base64_block(scalars)}
        </DataArray>
      </PointData>
      <Points>
        <DataArray type="Float64" Name="Points" NumberOfComponents="3" format="binary">
          {_base64_block(np.ascontiguousarray(points, dtype=np.float64))}
        </DataArray>
      </Points>
      <Polys>
        <DataArray type="Int64" Name="connectivity" format="ascii">
          {ints(quads)}
        </DataArray>
        <DataArray type="Int64" Name="offsets" format="ascii">
          {ints(offsets)}
        </DataArray>
      </Polys>
    </Piece>
  </PolyData>
</VTKFile>
"""
    _write_text(out_path, text, force=force)
    return out_path
