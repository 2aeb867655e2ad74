# SUITS: end-to-end training of the pre-trained FeatCNN through the iterative diffusion
# registration (Algorithm 1), and test-time registration of every test pair with the
# pre-trained FeatCNN (mind_pretrained), the SUITS-trained one (suits) and the hand-crafted
# MIND-SSC descriptor (mind_ssc), all in the same iterative scheme (Eq. 2).


rule train_suits:
    input:
        model="{fdir}/models/featcnn_pretrained.pt",
        pairs="{fdir}/train_pairs.tsv",
        images=lambda wc: train_pair_images(wc.fdir),
        val_pairs="{fdir}/val_pairs.tsv",
        val_images=lambda wc: val_pair_images(wc.fdir),
    output:
        model="{fdir}/models/featcnn_suits.pt",
        curve="{fdir}/models/featcnn_suits_curve.tsv",
    log:
        "{fdir}/logs/train_suits.log",
    benchmark:
        "{fdir}/benchmarks/train_suits.tsv"
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
        steps=config["suits"]["steps"],
        batch=config["suits"]["batch"],
        lr=config["suits"]["lr"],
        lam=config["suits"]["lam"],
        k_max=config["suits"]["k_max"],
        k_min=config["suits"]["k_min"],
        grad_A=config["suits"]["grad_A"],
        num_classes=len(ORGANS) + 1,
        solver=config["register"]["solver"],
        tol=config["register"]["tol"],
        warp_space=config["suits"]["warp_space"],
        label_warp_space=config["suits"]["label_warp_space"],
        checkpoint_every=config["suits"]["checkpoint_every"],
        checkpoint_dir=lambda wc: f"{wc.fdir}/models/checkpoints",
        validate_every=config["suits"]["validate_every"],
        select=config["suits"]["select"],
        validation=VALIDATION_REGISTER,
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/train_suits.py"


rule register_suits:
    input:
        unpack(pair_images),
        unpack(suits_model),
    output:
        field="{fdir}/fields/{method}/{pair}.nii.gz",
    log:
        "{fdir}/logs/register/{method}/{pair}.log",
    benchmark:
        "{fdir}/benchmarks/register/{method}/{pair}.tsv"
    wildcard_constraints:
        method="mind_pretrained|suits|mind_ssc",
    conda:
        ENVS["suits"]
    threads: threads_for("register")
    resources:
        **resources_for("register"),
        gpu=GPU,
    params:
        moving_modality=MOVING,
        fixed_modality=FIXED,
        iterations=config["register"]["iterations"],
        lam=config["register"]["lam"],
        gamma=config["register"]["gamma"],
        solver=config["register"]["solver"],
        tol=config["register"]["tol"],
        warp_space=config["register"]["warp_space"],
        mind_factor=config["featcnn"]["downsample"],
        mind_radius=config["pretrain"]["mind_radius"],
        mind_dilation=config["pretrain"]["mind_dilation"],
        device=config["device"],
    script:
        "../scripts/register_suits.py"
