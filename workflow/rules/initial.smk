# Initial: the affine alignment alone, i.e. the identity displacement on the fixed grid.


rule register_initial:
    input:
        unpack(pair_images),
    output:
        field="{fdir}/fields/initial/{pair}.nii.gz",
    log:
        "{fdir}/logs/register/initial/{pair}.log",
    benchmark:
        "{fdir}/benchmarks/register/initial/{pair}.tsv"
    conda:
        ENVS["suits"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    script:
        "../scripts/register_initial.py"
