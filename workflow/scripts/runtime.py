"""Rule runtime: wall time, CPU time and peak memory per method (registration jobs per
pair, training jobs) from the Snakemake benchmark files (suitsbench.runtime)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from suitsbench.runtime import runtime_table, write_runtime  # noqa: E402

o, p = snakemake.output, snakemake.params  # noqa: F821
names = {}
for key in p.files:  # "<method>" or "<method> training"
    method, _, suffix = key.partition(" ")
    names[key] = " ".join(filter(None, [p.names.get(method, method), suffix]))
write_runtime(runtime_table(dict(p.files), names=names), o.csv, o.md)
