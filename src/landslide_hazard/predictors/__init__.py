"""Predictors: the static fine-grid bands and the per-period trigger bands of the cube.

``terrain``: Zevenbergen-Thorne slope, aspect, northness/eastness and curvatures (3 x 3 window).
``hydrology``: priority-flood pit filling, D8 flow directions and accumulation, TWI, river masks
and distance to river. ``static``: the undeclared-nodata collar and the eight static cube bands
(``bands.STATIC_NAMES``), whole-array or chunk by chunk. ``triggers``: rain and shaking per
period. See docs/predictors.md.
"""
