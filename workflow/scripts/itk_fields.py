"""Rule itk_fields: every contract field (voxels, ijk) of one method as an ITK displacement
field (LPS mm, intent vector) on the same grid, one file per pair under the same name, for
ANTs, SimpleITK and 3D Slicer (suits.fieldfile)."""
from suitsbench.job import start

start(snakemake)  # noqa: F821

from pathlib import Path  # noqa: E402

from suits.fieldfile import contract_to_itk  # noqa: E402

out = Path(snakemake.output[0])  # noqa: F821
out.mkdir(parents=True, exist_ok=True)
for field in snakemake.input:  # noqa: F821
    contract_to_itk(field, out / Path(field).name)
    print(out / Path(field).name)
