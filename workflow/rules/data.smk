# Data: phantom generation (embedded default) or a manifest; validation of every file, the
# config and the split before anything expensive; preprocessing to the common grid.

from suitsbench.validate import check_plan  # noqa: E402

# The cheap checks when the workflow is parsed (no file is read): a bad config, manifest or
# split, or a file the manifest names but that does not exist, stops here with one line before
# any job is planned (snakemake would report a missing raw file as a missing input of
# `preprocess`). The `validate` rule reads every file before anything expensive.
try:
    check_plan(config, RECORDS, files=DATA["source"] == "manifest")
except InputError as e:
    raise WorkflowError(str(e))


if DATA["source"] == "phantom":

    rule phantom:
        output:
            manifest=f"{RES}/raw/manifest.tsv",
            images=[str(r.image) for r in RECORDS],
            labels=[str(r.label) for r in RECORDS],
        log:
            f"{RES}/logs/phantom.log",
        benchmark:
            f"{RES}/benchmarks/phantom.tsv"
        conda:
            ENVS["data"]
        threads: threads_for("light")
        resources:
            **resources_for("light"),
        params:
            n_per_modality=DATA["phantom"]["n_per_modality"],
            shape=DATA["phantom"]["shape"],
            spacing=DATA["phantom"]["spacing"],
            deform_scale=DATA["phantom"]["deform_scale"],
            fat_planes=DATA["phantom"]["fat_planes"],
            mr_bias=DATA["phantom"]["mr_bias"],
            modalities=PHANTOM_MODALITIES,
            seed=config["seed"],
        script:
            "../scripts/phantom.py"


rule validate:
    input:
        manifest=MANIFEST,
    output:
        split=f"{RES}/split.json",
        train_pairs=[f"{d}/train_pairs.tsv" for d in FOLD_DIRS],
        val_pairs=[f"{d}/val_pairs.tsv" for d in FOLD_DIRS],
    log:
        f"{RES}/logs/validate.log",
    benchmark:
        f"{RES}/benchmarks/validate.tsv"
    retries: 0  # bad input is not transient (the profiles retry failed jobs)
    conda:
        ENVS["data"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    params:
        # only what validation reads, so that a change of a method's setting re-runs that
        # method's jobs and not the whole workflow downstream of split.json
        config={k: config[k] for k in ("seed", "data", "split")},
        expected={d: vars(s) for d, s in SPLITS.items()},
        fold_dirs=FOLD_DIRS,
        aligned={i: {k: aligned(i, k) for k in ("image", "label", "fov")} for i in IDS},
    script:
        "../scripts/validate.py"


rule preprocess:
    input:
        unpack(raw_inputs),
        split=f"{RES}/split.json",
    output:
        image=f"{RES}/prep/{{id}}_image.nii.gz",
        label=f"{RES}/prep/{{id}}_label.nii.gz",
        fov=f"{RES}/prep/{{id}}_fov.nii.gz",
    log:
        f"{RES}/logs/preprocess/{{id}}.log",
    benchmark:
        f"{RES}/benchmarks/preprocess/{{id}}.tsv"
    conda:
        ENVS["data"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    params:
        labels=DATA["labels"],
        evaluate=ORGANS,
        spacing=config["preprocess"]["spacing"],
        shape=config["preprocess"]["shape"],
        normalise=config["preprocess"]["normalise"],
        max_label_crop=config["preprocess"]["max_label_crop"],
    script:
        "../scripts/preprocess.py"
