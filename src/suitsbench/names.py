"""Display names of methods and organs in Table 2, the figures and the runtime table.

Kept apart from :mod:`suitsbench.table` so that the workflow can read them when it is parsed
(standard library only).
"""
from __future__ import annotations

__all__ = ["METHOD_NAMES", "ORGAN_NAMES"]

#: method key -> display name, in the paper's order (extras after the paper's methods;
#: the module methods of suitsbench.methods last)
METHOD_NAMES: dict[str, str] = {
    "initial": "Initial",
    "elastix": "SimpleElastix",
    "voxelmorph": "VoxelMorph",
    "mind_pretrained": "pre-trained MIND",
    "suits": "SUITS (ours)",
    "mind_ssc": "MIND-SSC",
    "convexadam": "ConvexAdam",
    "ants": "ANTs SyN",
}
#: organ key -> display name, in the paper's order
ORGAN_NAMES: dict[str, str] = {
    "liver": "liver",
    "spleen": "spleen",
    "l_psoas": "l pmm",
    "r_psoas": "r pmm",
    "l_kidney": "l kidney",
    "r_kidney": "r kidney",
}
