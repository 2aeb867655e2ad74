# Features: the FeatCNN pre-trained to replicate MIND-SSC on the training images of both
# modalities (paper Sec. 3.3), with its learning curve on the validation pairs. Rolling
# checkpoints live in {fdir}/models/checkpoints/, which is not a declared output, so they
# survive a failed or killed job and a rerun resumes.


rule pretrain_featcnn:
    input:
        moving=lambda wc: aligned_of_ids(train_ids(wc.fdir, MOVING)),
        fixed=lambda wc: aligned_of_ids(train_ids(wc.fdir, FIXED)),
        val_pairs="{fdir}/val_pairs.tsv",
        val_images=lambda wc: val_pair_images(wc.fdir),
    output:
        model="{fdir}/models/featcnn_pretrained.pt",
        curve="{fdir}/models/featcnn_pretrained_curve.tsv",
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
        validation=VALIDATION_REGISTER,
        checkpoint_dir=lambda wc: f"{wc.fdir}/models/checkpoints",
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/pretrain_featcnn.py"
