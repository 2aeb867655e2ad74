# Evaluation: one evaluator for every method (suitsbench.evaluate): the moving labels warped
# with the method's field, Dice and HD95 (mm, voxels) per organ and pair, Jacobian statistics;
# and every field as an ITK displacement field for ANTs, SimpleITK and 3D Slicer.


rule evaluate:
    input:
        fields=method_fields,
        labels=test_pair_labels,
        fovs=test_pair_fovs,
    output:
        "{fdir}/metrics/{method}.tsv",
    log:
        "{fdir}/logs/evaluate/{method}.log",
    benchmark:
        "{fdir}/benchmarks/evaluate/{method}.tsv"
    conda:
        ENVS["report"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    params:
        pairs=lambda wc: split_of(wc.fdir).test_pairs,
        fold=lambda wc: fold_of(wc.fdir),
        organs=organ_map(),
        labels={i: aligned(i, "label") for i in IDS},
        fovs={i: aligned(i, "fov") for i in IDS},
        hd95_empty=config["evaluation"]["hd95_empty"],
        hd95_reduction=config["evaluation"]["hd95_reduction"],
    script:
        "../scripts/evaluate.py"


rule itk_fields:
    input:
        method_fields,
    output:
        directory("{fdir}/fields_itk/{method}"),
    log:
        "{fdir}/logs/itk_fields/{method}.log",
    benchmark:
        "{fdir}/benchmarks/itk_fields/{method}.tsv"
    conda:
        ENVS["report"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    script:
        "../scripts/itk_fields.py"
