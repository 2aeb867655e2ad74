"""Rule register_elastix: SimpleElastix-MI of one test pair (baselines.elastix_mi)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from baselines.elastix_mi import register_files  # noqa: E402
from baselines.elastix_params import format_map, parameter_map  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
params = parameter_map(dict(p.overrides))
print(format_map(params))
# torch/elastix threads from the config (resources.register.threads) or more: snakemake lowers
# a job's threads to --cores, and the numbers depend on the thread count
threads = max(snakemake.threads, snakemake.config["resources"]["register"]["threads"])  # noqa: F821
seconds = register_files(i.fixed, i.moving, o.field, params=params, threads=threads)
print(f"registered in {seconds:.2f} s")
