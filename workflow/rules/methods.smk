# Module methods (suitsbench.methods): one generic rule runs every method that is a module
# with a register() function behind the field contract, shipped (ConvexAdam, ANTs SyN) or
# declared in the config (custom_methods; docs/adding-a-method.md), one job per test pair.


rule register_module:
    input:
        unpack(pair_images),
    output:
        field="{fdir}/fields/{method}/{pair}.nii.gz",
    log:
        "{fdir}/logs/register/{method}/{pair}.log",
    benchmark:
        "{fdir}/benchmarks/register/{method}/{pair}.tsv"
    wildcard_constraints:
        method=MODULE_PATTERN,
    conda:
        module_env
    threads: threads_for("register")
    resources:
        **resources_for("register"),
        gpu=GPU,
    params:
        module=module_of,
        settings=lambda wc: dict(MODULE_METHODS[wc.method].settings),
        device=config["device"],
    script:
        "../scripts/register_module.py"
