# Baselines behind the field contract: SimpleElastix-MI (B-spline, Mattes MI) per test pair,
# and VoxelMorph-MIND (trained on the training pairs, one forward pass per test pair).


rule register_elastix:
    input:
        unpack(pair_images),
    output:
        field="{fdir}/fields/elastix/{pair}.nii.gz",
    log:
        "{fdir}/logs/register/elastix/{pair}.log",
    benchmark:
        "{fdir}/benchmarks/register/elastix/{pair}.tsv"
    conda:
        ENVS["baselines"]
    threads: threads_for("register")
    resources:
        **resources_for("register"),
    params:
        overrides=config["elastix"]["parameters"],
    script:
        "../scripts/register_elastix.py"


rule train_voxelmorph:
    input:
        pairs="{fdir}/train_pairs.tsv",
        images=lambda wc: train_pair_images(wc.fdir),
        val_pairs="{fdir}/val_pairs.tsv",
        val_images=lambda wc: val_pair_images(wc.fdir),
    output:
        model="{fdir}/models/voxelmorph.pt",
        curve="{fdir}/models/voxelmorph_curve.tsv",
    log:
        "{fdir}/logs/train_voxelmorph.log",
    benchmark:
        "{fdir}/benchmarks/train_voxelmorph.tsv"
    priority: 10
    conda:
        ENVS["baselines"]
    threads: threads_for("train")
    resources:
        **resources_for("train"),
        gpu=GPU,
    params:
        iterations=config["voxelmorph"]["iterations"],
        lr=config["voxelmorph"]["lr"],
        reg_weight=config["voxelmorph"]["reg_weight"],
        mind_radius=config["pretrain"]["mind_radius"],
        mind_dilation=config["pretrain"]["mind_dilation"],
        checkpoint_every=config["voxelmorph"]["checkpoint_every"],
        validate_every=config["voxelmorph"]["validate_every"],
        checkpoint_dir=lambda wc: f"{wc.fdir}/models/checkpoints",
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_voxelmorph.py"


rule register_voxelmorph:
    input:
        unpack(pair_images),
        model="{fdir}/models/voxelmorph.pt",
    output:
        field="{fdir}/fields/voxelmorph/{pair}.nii.gz",
    log:
        "{fdir}/logs/register/voxelmorph/{pair}.log",
    benchmark:
        "{fdir}/benchmarks/register/voxelmorph/{pair}.tsv"
    conda:
        ENVS["baselines"]
    threads: threads_for("register")
    resources:
        **resources_for("register"),
        gpu=GPU,
    params:
        device=config["device"],
    script:
        "../scripts/register_voxelmorph.py"
