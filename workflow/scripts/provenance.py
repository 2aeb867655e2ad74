"""Rule provenance: seed, config, versions of every package, platform, torch and git state
(suitsbench.provenance), recorded beside the results."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from suitsbench.provenance import collect, write_provenance  # noqa: E402

config = dict(snakemake.params.config)  # noqa: F821
write_provenance(snakemake.output[0], collect(config, config.get("seed")))  # noqa: F821
