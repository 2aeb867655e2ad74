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

Huge pages: likewise ``THP_MEM_ALLOC_ENABLE=1`` (unless set; ``0`` opts out) makes torch's CPU
allocator back large tensors with transparent huge pages where the kernel allows them
(``madvise`` mode). Every full-resolution activation of the FeatCNN is a fresh allocation of
hundreds of MB; with 4 KB pages their page faults cost ~30 ms each, about 1.3 s of a 9.5 s
training step at the paper's size (``docs/benchmarks.md``). Read once, at torch's first
allocation.
"""
import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
