# SUITS benchmark (Blendowski, Hansen, Heinrich, MedIA 2020): Table 2, Figs. 2-4 and
# everything behind them, from raw data.
#
#   snakemake --cores 2                               # embedded phantom default (config/config.yaml)
#   snakemake --cores 8 --configfile config/paper.yaml
#   snakemake --report results/phantom/report.html    # self-contained HTML report
#
# Stages (workflow/rules/): data -> affine -> features -> suits / baselines / methods / initial
# -> evaluation -> report. Results layout: docs/architecture.md and results/README.md.


from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

min_version("9.0")


# config/config.yaml unless config files are given with --configfile: then exactly those
# (merged in order), so every shipped config is complete and reads top to bottom.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


include: "workflow/rules/schema.smk"


# unknown keys and wrong types stop here with one line naming the key; defaults are filled in
SCHEMA = f"{workflow.basedir}/workflow/schemas/config.schema.yaml"
if config_problem(config, SCHEMA):
    raise WorkflowError(config_problem(config, SCHEMA))
validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/affine.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/suits.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/methods.smk"
include: "workflow/rules/initial.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
