# Shared definitions: result folders, the data set's records and the train/test split
# (computed when the workflow is parsed, so that `snakemake -n` lists every job; the
# `validate` rule re-derives it from the files and stops on any mismatch), and input helpers.

import re
import sys
from pathlib import Path

# the project's own packages, also when snakemake runs from another environment (conda):
# suits and suitsbench in src/, baselines at the top (pyproject.toml's package-dir)
sys.path[:0] = [str(Path(workflow.basedir) / "src"), str(Path(workflow.basedir))]

from suitsbench.qctable import select_pairs  # noqa: E402
from suitsbench.errors import InputError  # noqa: E402
from suitsbench.manifest import Record, read_manifest  # noqa: E402
from suitsbench.methods import module_methods  # noqa: E402
from suitsbench.pairid import ID_PATTERN, PAIR_PATTERN, split_pair_id  # noqa: E402
from suitsbench.pairwise_plan import partners  # noqa: E402
from suitsbench.split import make_split  # noqa: E402

DATA = config["data"]
RES = f"results/{config['dataset']}"
MOVING = DATA["moving_modality"].lower()
FIXED = DATA["fixed_modality"].lower()
FOLDS = int(config["split"]["folds"])
# per-fold folders (models, fields, metrics) only when cross-validating
FOLD_DIRS = [RES] if FOLDS == 1 else [f"{RES}/fold{k}" for k in range(FOLDS)]
METHODS = list(config["methods"])
# methods with their own rules; the module methods (suitsbench.methods) share register_module
RULE_METHODS = [
    "initial",
    "elastix",
    "voxelmorph",
    "mind_pretrained",
    "suits",
    "mind_ssc",
]
ORGANS = list(DATA["evaluate"])
GPU = int(config["gpu"])
ENVS = {
    name: f"../envs/{name}.yaml" for name in ("data", "suits", "baselines", "report")
}


wildcard_constraints:
    fdir="|".join(re.escape(d) for d in FOLD_DIRS),
    id=ID_PATTERN,
    pair=PAIR_PATTERN,
    method="|".join(METHODS),


def phantom_records():
    """The records the phantom generator will write (suitsbench.phantom.generate numbers the
    subjects p000, p001, ... over the modalities in the order given)."""
    n = int(DATA["phantom"]["n_per_modality"])
    raw = Path(RES) / "raw"
    records = []
    for m, modality in enumerate(PHANTOM_MODALITIES):
        for i in range(n):
            subject = f"p{m * n + i:03d}"
            stem = f"{subject}_{modality}"
            records.append(
                Record(
                    subject=subject,
                    modality=modality,
                    image=raw / f"{stem}_image.nii.gz",
                    label=raw / f"{stem}_label.nii.gz",
                    source=f"phantom {stem}",
                )
            )
    return records


PHANTOM_MODALITIES = [MOVING, FIXED]
if DATA["source"] == "phantom":
    MANIFEST = f"{RES}/raw/manifest.tsv"
    RECORDS = phantom_records()
else:
    if not DATA.get("manifest"):
        raise InputError(
            "data.manifest",
            "data.source is 'manifest' but no manifest is given",
            "set data.manifest to a TSV (config/README.md)",
        )
    MANIFEST = DATA["manifest"]
    # structure only (columns, ids, paths); the files are read by the `validate` rule
    RECORDS = read_manifest(MANIFEST)

BY_ID = {r.id: r for r in RECORDS}
IDS = sorted(BY_ID)


def check_methods():
    """The module methods of `methods` ({key: ModuleMethod}); one-line errors for unknown
    names, clashes and missing module or env files, before any job runs."""
    try:
        known = module_methods(config)
    except ValueError as err:
        raise InputError(
            "config key custom_methods", str(err), "rename the custom method"
        )
    unknown = [m for m in METHODS if m not in RULE_METHODS and m not in known]
    if unknown:
        raise InputError(
            "config key methods",
            f"unknown method(s) {unknown}",
            f"use {RULE_METHODS + list(known)} or declare them under custom_methods "
            "(docs/adding-a-method.md)",
        )
    chosen = {m: known[m] for m in METHODS if m in known}
    for key in config.get("custom_methods") or {}:
        spec = known[key]
        files = [("env", spec.env)] + [("module", spec.module)] * spec.module.endswith(
            ".py"
        )
        for what, path in files:
            if not Path(path).is_file():
                raise InputError(
                    f"config key custom_methods.{key}.{what}",
                    f"{path} is not a file",
                    "give a path relative to the working directory or an absolute one",
                )
    return chosen


MODULE_METHODS = check_methods()


def method_labels():
    """Method key -> display name, in `methods` order (Table 2, figures, runtime table)."""
    from suitsbench.names import METHOD_NAMES

    return {
        m: MODULE_METHODS[m].name if m in MODULE_METHODS else METHOD_NAMES.get(m, m)
        for m in METHODS
    }


def module_env(wildcards):
    """Conda env of a module method: workflow/envs/<env>.yaml, or the custom method's file."""
    env = MODULE_METHODS[wildcards.method].env
    if wildcards.method in config.get("custom_methods", {}):
        return str(Path(env).resolve())
    return f"../envs/{env}.yaml"


def module_of(wildcards):
    """The module of a module method (a .py path made absolute)."""
    name = MODULE_METHODS[wildcards.method].module
    return str(Path(name).resolve()) if name.endswith(".py") else name


# register_module's methods (a pattern that matches nothing when there are none)
MODULE_PATTERN = "|".join(re.escape(m) for m in MODULE_METHODS) or "(?!)"


if "elastix" in METHODS:
    # the parameter map is free-form in the schema: its structure is checked here, before any
    # job runs (elastix itself would stop with an internal error at the first test pair)
    from baselines.elastix_params import check_overrides  # noqa: E402

    try:
        check_overrides(config["elastix"]["parameters"])
    except ValueError as err:
        raise InputError(
            "config key elastix.parameters",
            str(err),
            "see baselines/elastix_params.py and the elastix manual for the parameters",
        )


def compute_splits():
    return [
        make_split(
            RECORDS,
            int(config["split"]["n_test"]),
            folds=FOLDS,
            fold=k,
            seed=int(config["seed"]),
            pairing=DATA["pairing"],
            moving_modality=MOVING,
            fixed_modality=FIXED,
            test_subjects=config["split"].get("test_subjects"),
            n_val=int(config["split"]["n_val"]),
        )
        for k in range(FOLDS)
    ]


SPLITS = dict(zip(FOLD_DIRS, compute_splits()))


def split_of(fdir):
    return SPLITS[fdir]


def fold_of(fdir):
    return FOLD_DIRS.index(fdir)


# ---------------------------------------------------------------- file names


def raw_image(wildcards):
    return str(BY_ID[wildcards.id].image)


def raw_inputs(wildcards):
    """Raw image and label of one id, plus (resize_moving_to_fixed) the fixed partner's image."""
    r = BY_ID[wildcards.id]
    files = {"image": str(r.image)}
    if r.label is not None:
        files["label"] = str(r.label)
    ref = resize_reference(r)
    if ref is not None:
        files["reference"] = str(ref.image)
    return files


def resize_reference(record):
    """The fixed record of the moving record's pair, when moving images are resized to it."""
    if not config["preprocess"]["resize_moving_to_fixed"] or record.modality != MOVING:
        return None
    key = record.pair or record.subject
    for r in RECORDS:
        if r.modality == FIXED and (r.pair or r.subject) == key:
            return r
    return None


def row_partners(id):
    """The images that the affine row of ``id`` registers (affine.directions), in id order."""
    chosen = set(partners(IDS, id, config["affine"]["directions"]))
    return [i for i in IDS if i in chosen]


def row_partner_files(kind):
    """Input function: the preprocessed files (kind image or fov) of the row's partners."""
    return lambda wc: [f"{RES}/prep/{i}_{kind}.nii.gz" for i in row_partners(wc.id)]


def aligned(id, kind="image"):
    """Input to every method (kind image, label or fov, the field-of-view mask): in the
    groupwise mean space, or the preprocessed file when affine.enabled is false."""
    stage = "aligned" if config["affine"]["enabled"] else "prep"
    return f"{RES}/{stage}/{id}_{kind}.nii.gz"


def aligned_of_ids(ids, kind="image"):
    return [aligned(i, kind) for i in ids]


def pretrain_image(id):
    """Pre-training input: the aligned image, or the preprocessed one (pretrain.images)."""
    if config["pretrain"]["images"] == "preprocessed":
        return f"{RES}/prep/{id}_image.nii.gz"
    return aligned(id)


def val_ids(fdir, modality):
    """The validation ids of one modality of a fold."""
    return [i for i in split_of(fdir).val_ids if BY_ID[i].modality == modality]


def train_ids(fdir, modality=None):
    ids = split_of(fdir).train_ids
    return [i for i in ids if modality is None or BY_ID[i].modality == modality]


def train_pair_images(fdir):
    """Every aligned image, label and field-of-view mask used by the training pairs of a fold."""
    ids = sorted({i for p in split_of(fdir).train_pairs for i in split_pair_id(p)})
    return [aligned(i, k) for k in ("image", "label", "fov") for i in ids]


def val_pair_images(fdir):
    """Every aligned image, label and field-of-view mask used by the validation pairs of a fold."""
    ids = sorted({i for p in split_of(fdir).val_pairs for i in split_pair_id(p)})
    return [aligned(i, k) for k in ("image", "label", "fov") for i in ids]


# test-time registration settings of the validation Dice (suits.validation.Validator)
VALIDATION_REGISTER = {
    k: config["register"][k]
    for k in ("iterations", "lam", "gamma", "solver", "tol", "warp_space")
}


# pair id -> role of the pairs the affine QC checks: every test and validation pair of every
# fold, and a few training pairs per training image (suitsbench.qctable.select_pairs)
QC_PAIRS = select_pairs(
    *(
        [p for s in SPLITS.values() for p in getattr(s, f"{role}_pairs")]
        for role in ("test", "val", "train")
    )
)
QC_IDS = sorted({i for p in QC_PAIRS for i in split_pair_id(p)})


def affine_qc_file():
    """[affine/qc.tsv] when the affine stage runs, else []."""
    return [f"{RES}/affine/qc.tsv"] if config["affine"]["enabled"] else []


def pair_images(wildcards):
    """Fixed and moving image of a test pair and their field-of-view masks (fixed_fov,
    moving_fov); with affine.qc.on_failure: stop also the affine QC, so that no test pair is
    registered before it passes."""
    moving_id, fixed_id = split_pair_id(wildcards.pair)
    files = {
        "fixed": aligned(fixed_id),
        "moving": aligned(moving_id),
        "fixed_fov": aligned(fixed_id, "fov"),
        "moving_fov": aligned(moving_id, "fov"),
    }
    if config["affine"]["qc"]["on_failure"] == "stop":
        files["affine_qc"] = affine_qc_file()
    return files


SUITS_MODELS = {
    "mind_pretrained": "featcnn_pretrained.pt",
    "suits": "featcnn_suits.pt",
}


def suits_model(wildcards):
    name = SUITS_MODELS.get(wildcards.method)
    return {} if name is None else {"model": f"{wildcards.fdir}/models/{name}"}


def field(fdir, method, pair):
    return f"{fdir}/fields/{method}/{pair}.nii.gz"


def method_fields(wildcards):
    return [
        field(wildcards.fdir, wildcards.method, p)
        for p in split_of(wildcards.fdir).test_pairs
    ]


def test_pair_labels(wildcards):
    ids = sorted(
        {i for p in split_of(wildcards.fdir).test_pairs for i in split_pair_id(p)}
    )
    return aligned_of_ids(ids, "label")


def test_pair_fovs(wildcards):
    ids = sorted({split_pair_id(p)[0] for p in split_of(wildcards.fdir).test_pairs})
    return aligned_of_ids(ids, "fov")


def all_metrics():
    return [f"{d}/metrics/{m}.tsv" for d in FOLD_DIRS for m in METHODS]


def register_benchmarks(method):
    return [
        f"{d}/benchmarks/register/{method}/{p}.tsv"
        for d in FOLD_DIRS
        for p in split_of(d).test_pairs
    ]


def register_runtimes():
    """Method -> the benchmark files of its registration jobs (one per test pair)."""
    return {m: register_benchmarks(m) for m in METHODS}


def itk_fields():
    """Per fold and method, the folder of its fields as ITK displacement fields (itk_fields)."""
    return [f"{d}/fields_itk/{m}" for d in FOLD_DIRS for m in METHODS]


TRAINING_BENCHMARKS = {
    "mind_pretrained": "pretrain_featcnn",
    "suits": "train_suits",
    "voxelmorph": "train_voxelmorph",
}


def runtime_inputs():
    files = {}
    for m in METHODS:
        files[m] = register_benchmarks(m)
        step = TRAINING_BENCHMARKS.get(m)
        if step is not None:
            files[f"{m} training"] = [f"{d}/benchmarks/{step}.tsv" for d in FOLD_DIRS]
    return files


def example_pair():
    """The pair drawn in Fig. 2: config report.example_pair or the first test pair of fold 0."""
    chosen = config["report"].get("example_pair")
    pairs = split_of(FOLD_DIRS[0]).test_pairs
    if chosen is not None and chosen not in pairs:
        raise InputError(
            "report.example_pair",
            f"{chosen!r} is not a test pair of fold 0",
            f"use one of {pairs[:3]}... or null",
        )
    return chosen or pairs[0]


def example_method():
    preferred = config["report"]["example_method"]
    return preferred if preferred in METHODS else METHODS[-1]


# trainer (a panel of the learning-curve figure) -> its curve file in {fdir}/models/
CURVES = {
    "pretrain": "featcnn_pretrained_curve.tsv",
    "suits": "featcnn_suits_curve.tsv",
    "voxelmorph": "voxelmorph_curve.tsv",
}


def learning_curves(fdir):
    """The curve files of the trainers the configured methods need (pre-training for
    mind_pretrained and suits), by trainer."""
    needed = {
        "pretrain": bool({"mind_pretrained", "suits"} & set(METHODS)),
        "suits": "suits" in METHODS,
        "voxelmorph": "voxelmorph" in METHODS,
    }
    return {t: f"{fdir}/models/{f}" for t, f in CURVES.items() if needed[t]}


def final_outputs():
    out = [
        f"{RES}/table2.csv",
        f"{RES}/table2.md",
        f"{RES}/table2.tex",
        f"{RES}/l2r_table.csv",
        f"{RES}/l2r_table.md",
        f"{RES}/fig3_dice.png",
        f"{RES}/fig3_dice.pdf",
        f"{RES}/fig4_hd95.png",
        f"{RES}/fig4_hd95.pdf",
        f"{RES}/fig2_example.png",
        f"{RES}/runtime.csv",
        f"{RES}/runtime.md",
        f"{RES}/provenance.json",
        *affine_qc_file(),
        *itk_fields(),
    ]
    for d in FOLD_DIRS:
        if learning_curves(d):
            out += [f"{d}/learning_curves.png", f"{d}/learning_curves.pdf"]
    return out


def organ_map():
    """Organ index in the preprocessed label maps (1..K, data.evaluate order) -> name."""
    return {k + 1: name for k, name in enumerate(ORGANS)}


def resources_for(kind):
    """mem_mb and runtime of a kind of job (config resources)."""
    return {k: v for k, v in config["resources"][kind].items() if k != "threads"}


def threads_for(kind):
    return int(config["resources"][kind]["threads"])
