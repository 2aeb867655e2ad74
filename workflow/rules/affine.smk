# Affine groupwise pre-registration (paper Sec. 4): every image against every other one
# (one job per image = one row of pairwise transforms; affine.directions: one registers each
# pair once and inverts it for the other direction), the unbiased mean space from all
# rows, every image, label map and field-of-view mask resampled into it, and a quality check
# of the result (affine/qc.tsv). affine.enabled: false skips the stage; the methods then
# read the preprocessed files (common.smk: aligned()).


rule affine_pairwise:
    input:
        image=f"{RES}/prep/{{id}}_image.nii.gz",
        mask=f"{RES}/prep/{{id}}_fov.nii.gz",
        others=row_partner_files("image"),
        other_masks=row_partner_files("fov"),
    output:
        f"{RES}/affine/pairwise/{{id}}.tsv",
    log:
        f"{RES}/logs/affine/pairwise/{{id}}.log",
    benchmark:
        f"{RES}/benchmarks/affine/pairwise/{{id}}.tsv"
    conda:
        ENVS["data"]
    threads: threads_for("register")
    resources:
        **resources_for("register"),
    params:
        moving_ids=lambda wc: row_partners(wc.id),
        levels=config["affine"]["levels"],
        init=config["affine"]["init"],
        init_starts=config["affine"]["init_starts"],
        device=config["device"],
    script:
        "../scripts/affine_pairwise.py"


rule affine_mean:
    input:
        rows=[f"{RES}/affine/pairwise/{i}.tsv" for i in IDS],
        images=[f"{RES}/prep/{i}_image.nii.gz" for i in IDS],
        masks=[f"{RES}/prep/{i}_fov.nii.gz" for i in IDS],
    output:
        transforms=[f"{RES}/affine/mean/{i}.txt" for i in IDS],
        reference=f"{RES}/affine/mean/reference_grid.nii.gz",
    log:
        f"{RES}/logs/affine/mean.log",
    benchmark:
        f"{RES}/benchmarks/affine/mean.tsv"
    conda:
        ENVS["data"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    params:
        ids=IDS,
        template_fov=config["affine"]["template_fov"],
    script:
        "../scripts/affine_mean.py"


rule affine_resample:
    input:
        image=f"{RES}/prep/{{id}}_image.nii.gz",
        label=f"{RES}/prep/{{id}}_label.nii.gz",
        fov=f"{RES}/prep/{{id}}_fov.nii.gz",
        transform=f"{RES}/affine/mean/{{id}}.txt",
        reference=f"{RES}/affine/mean/reference_grid.nii.gz",
    output:
        image=f"{RES}/aligned/{{id}}_image.nii.gz",
        label=f"{RES}/aligned/{{id}}_label.nii.gz",
        fov=f"{RES}/aligned/{{id}}_fov.nii.gz",
    log:
        f"{RES}/logs/affine/resample/{{id}}.log",
    benchmark:
        f"{RES}/benchmarks/affine/resample/{{id}}.tsv"
    priority: 30  # before the test pairs' registrations: the training jobs wait for it
    conda:
        ENVS["data"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    script:
        "../scripts/affine_resample.py"


rule affine_qc:
    input:
        images=[f"{RES}/aligned/{i}_image.nii.gz" for i in QC_IDS],
        masks=[f"{RES}/aligned/{i}_fov.nii.gz" for i in QC_IDS],
    output:
        report(
            f"{RES}/affine/qc.tsv",
            caption="../report/affine_qc.rst",
            category="Affine QC",
            labels={"table": "affine QC"},
        ),
    log:
        f"{RES}/logs/affine/qc.log",
    benchmark:
        f"{RES}/benchmarks/affine/qc.tsv"
    priority: 30  # a few seconds: its warning comes before the training jobs
    retries: 0  # a failed check is not transient (the profiles retry failed jobs)
    conda:
        ENVS["data"]
    threads: threads_for("register")
    resources:
        **resources_for("register"),
    params:
        ids=QC_IDS,
        pairs=QC_PAIRS,
        qc=config["affine"]["qc"],
    script:
        "../scripts/affine_qc.py"
