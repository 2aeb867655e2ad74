"""Rule register_suits: `suits register` of one test pair with the pre-trained FeatCNN
(mind_pretrained), the SUITS-trained FeatCNN (suits) or hand-crafted MIND-SSC (mind_ssc)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import sys  # noqa: E402
from suits.cli import main  # noqa: E402
from suitsbench.job import threads  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
n_threads = threads(snakemake, "register")  # noqa: F821
argv = [
    "register",
    "--fixed", i.fixed,
    "--moving", i.moving,
    "--model", getattr(i, "model", "mind"),
    "--out", o.field,
    "--iterations", p.iterations,
    "--lam", p.lam,
    "--gamma", p.gamma,
    "--solver", p.solver,
    "--tol", p.tol,
    "--fixed-modality", p.fixed_modality,
    "--moving-modality", p.moving_modality,
    "--mind-factor", p.mind_factor,
    "--mind-radius", p.mind_radius,
    "--mind-dilation", p.mind_dilation,
    "--warp-space", p.warp_space,
    "--device", p.device,
    "--threads", n_threads,
]  # fmt: skip
sys.exit(main([str(a) for a in argv]))
