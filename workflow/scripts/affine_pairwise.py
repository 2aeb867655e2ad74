"""Rule affine_pairwise: one row of the groupwise affine pre-registration, the image {id}
(fixed) against every other image (affine.directions both) or its share of the pairs (one;
suitsbench.groupwise.partners) (suitsbench.groupwise.pairwise_row: MIND-SSC block
matching and trimmed least squares, suitsbench.affine and suitsbench.blockmatch), started by
affine.init (search: the global search of suitsbench.globalinit; a pair with a partial or
padded scan starts from affine.init_starts candidates and keeps the best). Field-of-view
masks that mark padding keep it out of the registration; a mask without padding is not
passed (the result is then that of an unmasked run)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from suitsbench import job  # noqa: E402
from suitsbench.affine import AffineSettings  # noqa: E402
from suitsbench.groupwise import load_fov_masks, pairwise_row, save_row  # noqa: E402

i, p = snakemake.input, snakemake.params  # noqa: F821
job.threads(snakemake, "register")  # noqa: F821
device = job.device(p.device)
fixed_id = snakemake.wildcards.id  # noqa: F821
row = pairwise_row(
    fixed_id,
    {fixed_id: i.image, **dict(zip(p.moving_ids, i.others, strict=True))},
    masks=load_fov_masks(
        {fixed_id: i.mask, **dict(zip(p.moving_ids, i.other_masks, strict=True))}
    ),
    moving_ids=p.moving_ids,
    settings=AffineSettings(levels=tuple(p.levels), init_starts=int(p.init_starts)),
    init=p.init,
    device=device,
)
save_row(snakemake.output[0], fixed_id, row)  # noqa: F821
