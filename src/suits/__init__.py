"""SUITS: supervised iterative descent for multi-modal 3D registration.

Blendowski, Hansen, Heinrich, "Weakly-supervised learning of multi-modal features for regularised
iterative descent in 3D image registration", Medical Image Analysis 2020.

Modules (imported on demand, ``import suits`` stays light and changes nothing in the importing
process): ``mind`` (MIND-SSC), ``featcnn`` (the Y-shaped FeatCNN), ``warp`` (fields and
warping), ``diffusion`` (the Brox Gauss-Newton step), ``solver`` (its linear solve as an
autograd layer), ``register`` (iterative registration), ``pretrain`` (MIND replication),
``train`` (Algorithm 1), ``norm`` (FeatCNN's fused instance norm + ReLU), ``io``,
``fieldfile`` (field files without torch: the contract and the ITK form), ``checkpoint``,
``modelfile`` (model files), ``pairs`` (training-pair lists), ``cli``.

Programs that run SUITS tune their own process with one explicit call,
:func:`suits.tuning.tune_process`, before importing torch (the ``suits`` CLI, the workflow's
scripts and the benchmarks do).
"""
__version__ = "0.1.0"
