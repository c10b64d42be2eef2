"""Every figure of the library, made from result files and the data analyses return.

A figure never computes what it draws: the surface figures read a result file written by
``landscape.surface`` and the other analyses (see ``docs/h5-format.md``), the others take a
result file too or the plain data an analysis returns (arrays, dicts, its dataclass read by
attribute).  This package imports nothing from the analysis packages (``connect``,
``ensembles``, ``curves``, ``hessian``, ``variational``) nor the engine; files are read
through :mod:`landscape.io`.  Each function takes an optional matplotlib ``ax`` to draw into
(a new :class:`~matplotlib.figure.Figure` when omitted) and returns the figure.  Cells that
are not computed yet (NaN) are masked, so a partly computed file can be looked at while its
run goes on.

Importing this package imports no matplotlib and chooses no backend: new figures are plain
:class:`matplotlib.figure.Figure` objects (no pyplot state), which render headless with
``fig.savefig`` and display in notebooks.

============================  ===============================================================
function                      figure
============================  ===============================================================
:func:`plot_line`             1-D: losses (left axis) and accuracies in % (right axis)
:func:`plot_contour`          2-D: labelled contour lines, anchors and trajectory marked
:func:`plot_heatmap`          2-D: filled cells, missing cells grey
:func:`plot_surface3d`        2-D: 3-D surface
:func:`plot_trajectory`       PCA or curve plane: contours and the projected trajectory/curve
:func:`plot_curve_profile`    curve file: train loss and test error (%) along t, curve vs line
:func:`plot_hessian_maps`     plane with eigenvalue maps: lambda_max, lambda_min, their ratio
:func:`plot_density`          Hessian spectral density (``SpectralDensity`` of ``slq``)
:func:`plot_connections`      connections file: accuracy along t of every method
:func:`plot_wa_ensemble`      WA-ensemble file: accuracy against the number of members
:func:`plot_ensembles`        ensembles file: ensemble error against the training budget
:func:`plot_merge`            merge file: metric against lambda/density/t/alpha, lambda-plane, soups
:func:`plot_fge`              FGE run: cyclic learning rate, snapshots' distance and error
:func:`plot_snr`              SNR per layer (``landscape.variational.snr``): histograms
:func:`plot_sharpness`        sharpness file: the loss increase of every perturbation, per measure
:func:`plot_file`             every figure that applies to a file, saved as PNG/PDF
:func:`export_vtp`            2-D: ParaView ``.vtp`` surface
:func:`write_report`          every file of a run in one self-contained HTML page
============================  ===============================================================

Modules: :mod:`.surfaces` (lines and planes), :mod:`.curves` (curve profiles),
:mod:`.hessian`, :mod:`.connections`, :mod:`.ensembles`, :mod:`.variational`,
:mod:`.files` (:func:`plot_file`), :mod:`.export` (:func:`export_vtp`) and :mod:`.report`
(:func:`write_report`, the HTML report: ``docs/report.md``).

The figures follow Li et al. (2018), *Visualizing the Loss Landscape of Neural Nets*
(contour lines with labels, log-spaced levels, marked checkpoints, trajectories on a
PCA plane with the explained variance on the axes) and Garipov et al. (2018), *Loss
Surfaces, Mode Connectivity, and Fast Ensembling of DNNs* (train solid, test dashed).

Examples
--------
>>> import os, tempfile
>>> import numpy as np
>>> from landscape.io import create_result
>>> from landscape.plot import plot_contour
>>> path = os.path.join(tempfile.mkdtemp(), "plane.h5")
>>> x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
>>> loss = 0.1 + x[:, None] ** 2 + 2 * y[None, :] ** 2
>>> with create_result(path, kind="plane", shape=(5, 4), metrics=["train_loss"],
...                    attrs={"surface-type": "random"}, arrays={"x": x, "y": y}) as rf:
...     rf.write_cells(np.arange(20), {"train_loss": loss.ravel()})
>>> fig = plot_contour(path)
>>> [float(v) for v in fig.axes[0].get_xlim()]   # the extent of x
[-1.0, 1.0]
>>> fig.savefig(os.path.join(os.path.dirname(path), "plane-contour.png"))
"""

from ._base import Source
from .connections import plot_connections, plot_wa_ensemble
from .curves import plot_curve_profile
from .ensembles import plot_ensembles, plot_fge
from .export import export_vtp
from .files import plot_file
from .hessian import plot_density, plot_hessian_maps
from .merge import plot_merge
from .report import write_report
from .sharpness import plot_sharpness
from .surfaces import plot_contour, plot_heatmap, plot_line, plot_surface3d, plot_trajectory
from .variational import plot_snr

__all__ = [
    "Source",
    "export_vtp",
    "plot_connections",
    "plot_contour",
    "plot_curve_profile",
    "plot_density",
    "plot_ensembles",
    "plot_file",
    "plot_fge",
    "plot_heatmap",
    "plot_hessian_maps",
    "plot_line",
    "plot_merge",
    "plot_snr",
    "plot_sharpness",
    "plot_surface3d",
    "plot_trajectory",
    "plot_wa_ensemble",
    "write_report",
]
