# Config validation with a one-line message (snakemake.utils.validate prints the whole schema).


def config_problem(cfg, schema_path):
    """The most relevant schema violation of cfg as one line: the key path and the problem."""
    import jsonschema
    import yaml

    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    errors = jsonschema.Draft202012Validator(schema).iter_errors(cfg)
    err = jsonschema.exceptions.best_match(errors)
    if err is None:
        return None
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    return (
        f"config key {where}: {err.message}; "
        "see config/config.yaml for every key and workflow/schemas/config.schema.yaml for the types"
    )
