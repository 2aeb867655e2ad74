"""Rule register_module: one test pair with a module method (suitsbench.methods.run)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from suitsbench import job  # noqa: E402
from suitsbench.methods import run  # noqa: E402

i, o, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
n_threads = job.threads(snakemake, "register")  # noqa: F821
print(f"{snakemake.wildcards.method}: {p.module} {dict(p.settings)}")  # noqa: F821
seconds = run(p.module, i.fixed, i.moving, o.field, settings=dict(p.settings),
              threads=n_threads, device=job.device(p.device))
print(f"registered in {seconds:.2f} s")
