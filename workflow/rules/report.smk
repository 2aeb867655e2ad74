# Report: Table 2 (Wilcoxon tests of SUITS against every other method), the box plots of
# Figs. 3 and 4, the example pair of Fig. 2, the runtime table and the provenance record.
# With split.folds > 1 every table and figure pools the test pairs of all folds.


rule table2:
    input:
        all_metrics(),
    output:
        csv=report(
            f"{RES}/table2.csv",
            caption="../report/table2.rst",
            category="Table 2",
            labels={"table": "Table 2 (csv)"},
        ),
        md=f"{RES}/table2.md",
        tex=f"{RES}/table2.tex",
    log:
        f"{RES}/logs/table2.log",
    benchmark:
        f"{RES}/benchmarks/table2.tsv"
    conda:
        ENVS["report"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    params:
        methods=method_labels(),
        organs=ORGANS,
        reference="suits" if "suits" in METHODS else None,
        test=config["evaluation"]["test"],
        std_over=config["evaluation"]["std_over"],
    script:
        "../scripts/table2.py"


rule boxplot:
    input:
        all_metrics(),
    output:
        png=report(
            f"{RES}/fig{{fig}}_{{metric}}.png",
            caption="../report/boxplot.rst",
            category="Figures",
            labels={"figure": "Fig. {fig}: {metric}"},
        ),
        pdf=f"{RES}/fig{{fig}}_{{metric}}.pdf",
    log:
        f"{RES}/logs/fig{{fig}}_{{metric}}.log",
    benchmark:
        f"{RES}/benchmarks/fig{{fig}}_{{metric}}.tsv"
    wildcard_constraints:
        fig="3|4",
        metric="dice|hd95",
    conda:
        ENVS["report"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    params:
        methods=method_labels(),
        organs=ORGANS,
    script:
        "../scripts/boxplot.py"


rule example_figure:
    input:
        fixed=aligned(split_pair_id(example_pair())[1]),
        moving=aligned(split_pair_id(example_pair())[0]),
        fixed_label=aligned(split_pair_id(example_pair())[1], "label"),
        moving_label=aligned(split_pair_id(example_pair())[0], "label"),
        field=field(FOLD_DIRS[0], example_method(), example_pair()),
    output:
        report(
            f"{RES}/fig2_example.png",
            caption="../report/example.rst",
            category="Figures",
            labels={"figure": "Fig. 2: example pair"},
        ),
    log:
        f"{RES}/logs/fig2_example.log",
    benchmark:
        f"{RES}/benchmarks/fig2_example.tsv"
    conda:
        ENVS["report"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    params:
        organs=organ_map(),
        pair=example_pair(),
        method=example_method(),
    script:
        "../scripts/example_figure.py"


rule runtime:
    input:
        [f for files in runtime_inputs().values() for f in files],
    output:
        csv=report(
            f"{RES}/runtime.csv",
            caption="../report/runtime.rst",
            category="Runtime",
            labels={"table": "runtime and memory"},
        ),
        md=f"{RES}/runtime.md",
    log:
        f"{RES}/logs/runtime.log",
    benchmark:
        f"{RES}/benchmarks/runtime.tsv"
    conda:
        ENVS["report"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    params:
        files=runtime_inputs(),
        names=method_labels(),
    script:
        "../scripts/runtime.py"


rule provenance:
    input:
        f"{RES}/table2.csv",
    output:
        report(
            f"{RES}/provenance.json",
            caption="../report/provenance.rst",
            category="Provenance",
            labels={"file": "provenance.json"},
        ),
    log:
        f"{RES}/logs/provenance.log",
    benchmark:
        f"{RES}/benchmarks/provenance.tsv"
    conda:
        ENVS["report"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    params:
        config=config,
    script:
        "../scripts/provenance.py"
