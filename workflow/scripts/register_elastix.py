"""Rule register_elastix: SimpleElastix-MI of one test pair (baselines.elastix_mi)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from baselines.elastix_mi import register_files  # noqa: E402
from baselines.elastix_params import format_map, parameter_map  # noqa: E402
from suitsbench.job import threads  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
params = parameter_map(dict(p.overrides))
print(format_map(params))
# elastix's threads; torch's are left as they are
n_threads = threads(snakemake, "register", torch_threads=False)  # noqa: F821
# the fov masks reach elastix only when they have padding (all ones: no mask)
seconds = register_files(i.fixed, i.moving, o.field, params=params, threads=n_threads,
                         fixed_mask_path=i.fixed_fov, moving_mask_path=i.moving_fov)
print(f"registered in {seconds:.2f} s")
