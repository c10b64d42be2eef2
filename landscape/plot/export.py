"""ParaView export of a plane: VTK XML PolyData (``.vtp``)."""

from __future__ import annotations

import base64
import os
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from ._base import (
    Source,
    _finite_range,
    _read,
)

VTP_LOG_TRANSFORMS = {"log10": "log10({})", "ln+0.1": "ln({} + 0.1)"}
"""The height transforms of :func:`export_vtp` (``log=``) and how the file names them:
``"log10"`` ours, ``"ln+0.1"`` loss-landscape's ``h52vtp.py --log``."""


def _log_transform(log: bool | str) -> str | None:
    """``log=`` as a key of :data:`VTP_LOG_TRANSFORMS` (None: no log)."""
    if log is False or log is None:
        return None
    if log is True:
        return "log10"
    if isinstance(log, str) and log in VTP_LOG_TRANSFORMS:
        return log
    raise ValueError(
        f"log={log!r} is not a height transform; expected False, True or one of {list(VTP_LOG_TRANSFORMS)}"
    )


def _heights(surface, metric: str, values: np.ndarray, transform: str | None, zmax: float | None) -> np.ndarray:
    """The metric's values as heights: the log ``transform`` (a key of :data:`VTP_LOG_TRANSFORMS`
    or None), then capped at ``zmax``; NaN where the metric is not finite."""
    low, _ = _finite_range(surface, metric, values)
    finite = np.isfinite(values)
    heights = np.where(finite, values, np.nan)
    if transform is not None:
        floor, needs = (0.0, "positive values") if transform == "log10" else (-0.1, "values above -0.1 (ln+0.1)")
        if low <= floor:
            raise ValueError(f"{surface.name}: log needs {needs} but {metric!r} has minimum {low:.6g}; pass log=False")
        heights[finite] = np.log10(heights[finite]) if transform == "log10" else np.log(heights[finite] + 0.1)
    if zmax is not None:
        heights[finite] = np.minimum(heights[finite], float(zmax))
    return heights


def _point_array(name: str, data: np.ndarray) -> str:
    """One float64 ``DataArray`` of the point data, inline base64."""
    return f"""
        <DataArray type="Float64" Name={quoteattr(name)} NumberOfComponents="1" format="binary">
          {_base64_block(np.ascontiguousarray(data, dtype=np.float64))}
        </DataArray>"""


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
    log: bool | str = False,
    zmax: float | None = None,
    force: bool = False,
) -> str:
    """Write a plane's surface as ParaView VTK XML PolyData (``.vtp``).

    Point ``i * ny + j`` (the cell's flat index) is at ``(x[i], y[j], z)`` with
    ``z`` the metric value, or a log of it with ``log`` (:data:`VTP_LOG_TRANSFORMS`:
    ``"log10"``, :math:`\\log_{10} v`, ours; ``"ln+0.1"``, :math:`\\ln(v + 0.1)`, what
    loss-landscape's ``h52vtp.py --log`` draws), capped at ``zmax``;
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
    log : bool or {"log10", "ln+0.1"}
        Heights are a log of the metric: ``True`` or ``"log10"`` :math:`\\log_{10} v`
        (positive values only); ``"ln+0.1"`` :math:`\\ln(v + 0.1)` (values above -0.1), as
        loss-landscape's ``h52vtp.py``. The file names the transform: a comment before the
        data and a second point array of the heights, ``log10(<metric>)`` or
        ``ln(<metric> + 0.1)`` (NaN where not computed).
    zmax : float, optional
        Heights above ``zmax`` are set to ``zmax`` (after ``log``, in the heights' units;
        ``h52vtp.py`` caps the values before its log, so its ``--zmax Z`` is
        ``zmax=ln(Z + 0.1)`` here).
    force : bool
        Overwrite an existing ``out_path``.

    Returns
    -------
    str
        ``out_path``.

    Raises
    ------
    ValueError
        The file is a line, ``log`` is not a known transform, or the metric has values the
        transform does not take.
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
    finite = np.isfinite(values)
    transform = _log_transform(log)
    heights = _heights(surface, metric, values, transform, zmax)
    shown_heights = heights.ravel().copy()  # NaN where not computed
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
    height_name = metric if transform is None else VTP_LOG_TRANSFORMS[transform].format(metric)
    note = f"heights (z): {height_name}" + ("" if zmax is None else f", capped at {float(zmax):g}")
    arrays = [(metric, scalars)] if transform is None else [(metric, scalars), (height_name, shown_heights)]
    text = f"""<?xml version="1.0"?>
<!-- landscape export_vtp: {escape(note.replace("--", "- -"))} -->
<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" header_type="UInt64">
  <PolyData>
    <Piece NumberOfPoints="{nx * ny}" NumberOfVerts="0" NumberOfLines="0" NumberOfStrips="0" \
NumberOfPolys="{len(quads)}">
      <PointData Scalars={quoteattr(metric)}>{"".join(_point_array(name, data) for name, data in arrays)}
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
