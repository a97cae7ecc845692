"""Pictures: class palettes, colour masks and overlays, legends, figure grids, and FaPN's learned offsets.

Example:
    >>> import numpy as np
    >>> from fapn.visualize import colorize, overlay
    >>> label = np.array([[0, 1], [1, 255]])
    >>> colorize(label, [[0, 0, 0], [255, 0, 0]]).shape
    (2, 2, 3)
"""

from fapn.visualize.alignment import AlignmentPictures, alignment_pictures
from fapn.visualize.disagreement import disagreement_map
from fapn.visualize.flow import (
    arrow_scale,
    color_wheel,
    draw_arrows,
    features_to_rgb,
    flow_to_color,
    heatmap,
    mean_displacement,
)
from fapn.visualize.grid import image_grid, resize_rgb, titled
from fapn.visualize.legend import add_legend, labelled_figure, legend, present_classes
from fapn.visualize.overlay import blend, overlay
from fapn.visualize.palette import as_palette, colorize, default_palette

__all__ = [
    "default_palette",
    "as_palette",
    "colorize",
    "overlay",
    "blend",
    "legend",
    "add_legend",
    "present_classes",
    "labelled_figure",
    "image_grid",
    "titled",
    "resize_rgb",
    "mean_displacement",
    "flow_to_color",
    "color_wheel",
    "draw_arrows",
    "arrow_scale",
    "features_to_rgb",
    "heatmap",
    "alignment_pictures",
    "AlignmentPictures",
    "disagreement_map",
]
