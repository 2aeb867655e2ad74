"""SUITS: supervised iterative descent for multi-modal 3D registration.

Blendowski, Hansen, Heinrich, "Weakly-supervised learning of multi-modal features for regularised
iterative descent in 3D image registration", Medical Image Analysis 2020.

Modules (imported on demand, ``import suits`` stays light): ``mind`` (MIND-SSC), ``featcnn``
(the Y-shaped FeatCNN), ``warp`` (fields and warping), ``diffusion`` / ``amg`` (the Brox
Gauss-Newton step and the AMG solve as an autograd layer), ``register`` (iterative registration),
``pretrain`` (MIND replication), ``train`` (Algorithm 1), ``norm`` (FeatCNN's fused instance
norm + ReLU), ``io``, ``checkpoint``, ``cli``.

OpenMP wait policy: importing ``suits`` before ``torch`` sets ``OMP_WAIT_POLICY=PASSIVE``
unless the variable is already set (``OMP_WAIT_POLICY=ACTIVE`` restores OpenMP's default
spinning; the setting is read once, when torch's OpenMP runtime loads, so it has no effect if
torch was imported first). A Gauss-Newton step is some thousand small kernels, each ending in
an OpenMP barrier; with spinning threads on a CPU shared with other jobs, a registration at the
paper's size took 139-163 s instead of 20-24 s (``docs/benchmarks.md``). Large kernels
(convolutions) are unaffected.

Freed memory: ``import suits`` makes glibc's ``malloc`` keep freed memory for reuse instead of
unmapping every large block (:mod:`suits.memory`, with its costs; ``SUITS_RETAIN_FREED_MEMORY=0``
opts out, and glibc's own ``MALLOC_*`` / ``GLIBC_TUNABLES`` settings are left alone).
Every full-resolution FeatCNN activation is an allocation of hundreds of MB; unmapped on free,
the next one faults all its pages in again: from almost nothing to 4-10 s of system time per
training step at the paper's size on the 2-vCPU VM this project is measured on, depending on
the day (``docs/benchmarks.md``). With the memory kept, only a process's first steps pay.
Transparent huge pages for torch's allocations (``THP_MEM_ALLOC_ENABLE=1``, set by ``suits``
until session 16) are no longer set: with the memory kept they gave no speed and 1.5 GB more
peak memory; set the variable yourself to use them.
"""
import os as _os

from suits import memory as _memory

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if _memory.enabled_by_environment():
    _memory.retain_freed_memory()

__version__ = "0.1.0"
