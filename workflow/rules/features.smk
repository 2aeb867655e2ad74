# Features: the FeatCNN pre-trained to replicate MIND-SSC on the training images of both
# modalities (paper Sec. 3.3), and its learning curve. Pre-training keeps the weights of every
# validation step (snapshots); validate_pretrained scores them on the aligned validation pairs,
# so with pretrain.images: preprocessed pre-training runs beside the affine stage. Rolling
# checkpoints live in {fdir}/models/checkpoints/, which is not a declared output, so they
# survive a failed or killed job and a rerun resumes.


rule pretrain_featcnn:
    input:
        moving=lambda wc: [pretrain_image(i) for i in train_ids(wc.fdir, MOVING)],
        fixed=lambda wc: [pretrain_image(i) for i in train_ids(wc.fdir, FIXED)],
        val_moving=lambda wc: [pretrain_image(i) for i in val_ids(wc.fdir, MOVING)],
        val_fixed=lambda wc: [pretrain_image(i) for i in val_ids(wc.fdir, FIXED)],
    output:
        model="{fdir}/models/featcnn_pretrained.pt",
        losses="{fdir}/models/featcnn_pretrained_losses.tsv",
        snapshots=temp("{fdir}/models/featcnn_pretrained_snapshots.pt"),
    log:
        "{fdir}/logs/pretrain_featcnn.log",
    benchmark:
        "{fdir}/benchmarks/pretrain_featcnn.tsv"
    priority: 20
    conda:
        ENVS["suits"]
    threads: threads_for("train")
    resources:
        **resources_for("train"),
        gpu=GPU,
    params:
        moving_modality=MOVING,
        fixed_modality=FIXED,
        downsample=config["featcnn"]["downsample"],
        iterations=config["pretrain"]["iterations"],
        lr=config["pretrain"]["lr"],
        radius=config["pretrain"]["mind_radius"],
        dilation=config["pretrain"]["mind_dilation"],
        crop=config["pretrain"]["crop"],
        checkpoint_every=config["pretrain"]["checkpoint_every"],
        validate_every=config["pretrain"]["validate_every"],
        checkpoint_dir=lambda wc: f"{wc.fdir}/models/checkpoints",
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/pretrain_featcnn.py"


rule validate_pretrained:
    input:
        model="{fdir}/models/featcnn_pretrained.pt",
        losses="{fdir}/models/featcnn_pretrained_losses.tsv",
        snapshots="{fdir}/models/featcnn_pretrained_snapshots.pt",
        val_pairs="{fdir}/val_pairs.tsv",
        val_images=lambda wc: val_pair_images(wc.fdir),
    output:
        curve="{fdir}/models/featcnn_pretrained_curve.tsv",
    log:
        "{fdir}/logs/validate_pretrained.log",
    benchmark:
        "{fdir}/benchmarks/validate_pretrained.tsv"
    conda:
        ENVS["suits"]
    threads: threads_for("train")
    resources:
        **resources_for("train"),
        gpu=GPU,
    params:
        moving_modality=MOVING,
        fixed_modality=FIXED,
        validation=VALIDATION_REGISTER,
        device=config["device"],
    script:
        "../scripts/validate_pretrained.py"
