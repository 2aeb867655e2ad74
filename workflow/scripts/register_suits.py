"""Rule register_suits: registration of one test pair with the pre-trained FeatCNN
(mind_pretrained), the SUITS-trained FeatCNN (suits) or hand-crafted MIND-SSC (mind_ssc), the
library calls of `suits register` (suits.cli.cmd_register) in its order."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

import torch  # noqa: E402
from suits.cli import setup_logging  # noqa: E402
from suits.io import load_volume, save_field  # noqa: E402
from suits.modelfile import load_representation  # noqa: E402
from suits.register import register  # noqa: E402
from suitsbench import job  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
job.threads(snakemake, "register")  # noqa: F821
setup_logging()
device = torch.device(job.device(p.device))
fixed, affine = load_volume(i.fixed, device=device)
moving, _ = load_volume(i.moving, device=device)
# the fov masks (--fixed-mask, --moving-mask) weight the data term only when they have padding
fixed_fov, _ = load_volume(i.fixed_fov, device=device)
moving_fov, _ = load_volume(i.moving_fov, device=device)
model = load_representation(
    getattr(i, "model", "mind"),
    (p.fixed_modality, p.moving_modality),
    device,
    int(p.mind_factor),
    int(p.mind_radius),
    int(p.mind_dilation),
)
u = register(
    fixed,
    moving,
    model,
    iterations=int(p.iterations),
    lam=float(p.lam),
    gamma=float(p.gamma),
    fixed_modality=str(p.fixed_modality),
    moving_modality=str(p.moving_modality),
    solver=str(p.solver),
    tol=float(p.tol),
    warp_space=str(p.warp_space),
    fixed_mask=fixed_fov,
    moving_mask=moving_fov,
)
save_field(o.field, u, affine)
