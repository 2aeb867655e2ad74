# Report: Table 2 (Wilcoxon tests of SUITS against every other method; its caption names
# the test pairs and images the affine QC flags), the Learn2Reg-style
# summary and ranking, the box plots of Figs. 3 and 4, the example pair of Fig. 2, the runtime
# table, the provenance record and the learning curves.
# With split.folds > 1 every table and figure pools the test pairs of all folds, except the
# learning curves, one figure per fold folder.


rule table2:
    input:
        metrics=all_metrics(),
        affine_qc=affine_qc_file(),
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
        correction=config["evaluation"]["correction"],
        test_pairs=[p for d in FOLD_DIRS for p in split_of(d).test_pairs],
    script:
        "../scripts/table2.py"


rule l2r_table:
    input:
        metrics=all_metrics(),
        runtimes=[f for files in register_runtimes().values() for f in files],
    output:
        csv=report(
            f"{RES}/l2r_table.csv",
            caption="../report/l2r_table.rst",
            category="Learn2Reg-style summary",
            labels={"table": "Learn2Reg-style summary (csv)"},
        ),
        md=f"{RES}/l2r_table.md",
    log:
        f"{RES}/logs/l2r_table.log",
    benchmark:
        f"{RES}/benchmarks/l2r_table.tsv"
    conda:
        ENVS["report"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    params:
        methods=METHODS,
        organs=ORGANS,
        runtime_files=register_runtimes(),
    script:
        "../scripts/l2r_table.py"


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


rule learning_curves:
    input:
        unpack(lambda wc: learning_curves(wc.fdir)),
    output:
        png=report(
            "{fdir}/learning_curves.png",
            caption="../report/learning_curves.rst",
            category="Learning curves",
            labels={"figure": "learning curves", "folder": "{fdir}"},
        ),
        pdf="{fdir}/learning_curves.pdf",
    log:
        "{fdir}/logs/learning_curves.log",
    benchmark:
        "{fdir}/benchmarks/learning_curves.tsv"
    conda:
        ENVS["report"]
    threads: threads_for("light")
    resources:
        **resources_for("light"),
    script:
        "../scripts/learning_curves.py"
