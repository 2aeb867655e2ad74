"""SUITS: supervised iterative descent for multi-modal 3D registration.

Blendowski, Hansen, Heinrich, "Weakly-supervised learning of multi-modal features for regularised
iterative descent in 3D image registration", Medical Image Analysis 2020.

Modules (imported on demand, ``import suits`` stays light): ``mind`` (MIND-SSC), ``featcnn``
(the Y-shaped FeatCNN), ``warp`` (fields and warping), ``diffusion`` / ``amg`` (the Brox
Gauss-Newton step and the AMG solve as an autograd layer), ``register`` (iterative registration),
``pretrain`` (MIND replication), ``train`` (Algorithm 1), ``io``, ``checkpoint``, ``cli``.
"""
__version__ = "0.1.0"
