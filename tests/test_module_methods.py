"""Module methods (suitsbench.methods): the registry, the runner that loads a module's
register(), checks its field and writes the contract file, and their one-line errors; the
schema's defaults for the shipped methods equal the modules' own."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from suits.io import load_field, save_volume
from suitsbench.methods import BUILTIN, ModuleMethod, check_field, load_register, module_methods, run

ROOT = Path(__file__).resolve().parents[1]
SHIFT_MODULE = '''
import torch

def register(fixed, moving, fixed_affine, moving_affine, *, threads, device, shift=(0.0, 0.0, 0.0)):
    u = torch.zeros(1, 3, *fixed.shape[-3:])
    for c, s in enumerate(shift):
        u[:, c] = s
    return u
'''


@pytest.fixture
def pair(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 4.0, 7.0]
    rng = np.random.default_rng(0)
    for name in ("fixed", "moving"):
        save_volume(tmp_path / f"{name}.nii.gz", rng.standard_normal((6, 5, 4)), affine)
    return tmp_path / "fixed.nii.gz", tmp_path / "moving.nii.gz", affine


def test_run_writes_the_modules_field_as_the_contract_file(tmp_path, pair):
    fixed, moving, affine = pair
    module = tmp_path / "shift_method.py"
    module.write_text(SHIFT_MODULE)
    out = tmp_path / "fields" / "shift.nii.gz"
    out.parent.mkdir()
    seconds = run(str(module), fixed, moving, out, settings={"shift": [1.5, 0.0, -2.0]})
    assert seconds >= 0
    u, a = load_field(out)
    assert u.shape == (1, 3, 6, 5, 4)
    np.testing.assert_array_equal(a, affine)
    assert torch.all(u[0, 0] == 1.5) and torch.all(u[0, 1] == 0) and torch.all(u[0, 2] == -2.0)


def test_a_dotted_module_name_loads_too():
    from baselines.convex_adam import register

    assert load_register("baselines.convex_adam") is register


def test_bad_modules_and_fields_fail_with_the_module_named(tmp_path, pair):
    fixed, moving, _ = pair
    with pytest.raises(ImportError, match="nope.py: method module not found"):
        load_register(str(tmp_path / "nope.py"))
    empty = tmp_path / "empty_method.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ImportError, match="needs a function register"):
        load_register(str(empty))
    with pytest.raises(ValueError, match=r"m\.py: register\(\) returned a field of shape \(1, 3, 5, 5, 4\)"):
        check_field(torch.zeros(1, 3, 5, 5, 4), (6, 5, 4), "m.py")
    with pytest.raises(ValueError, match="NaN"):
        check_field(torch.full((3, 6, 5, 4), float("nan")), (6, 5, 4), "m.py")
    assert check_field(np.zeros((3, 6, 5, 4)), (6, 5, 4), "m.py").shape == (1, 3, 6, 5, 4)


def test_registry_takes_builtin_sections_and_custom_entries():
    config = {
        "convexadam": {"grid_sp": 4},
        "custom_methods": {"zero": {"module": "m.py", "env": "e.yaml", "settings": {"a": 1}}},
    }
    methods = module_methods(config)
    assert set(methods) == set(BUILTIN) | {"zero"}
    assert methods["convexadam"] == ModuleMethod("baselines.convex_adam", "convexadam", "ConvexAdam",
                                                 {"grid_sp": 4})
    assert methods["ants"].settings == {}
    assert methods["zero"] == ModuleMethod("m.py", "e.yaml", "zero", {"a": 1})
    with pytest.raises(ValueError, match="custom_methods.ants: 'ants' is a method the benchmark ships"):
        module_methods({"custom_methods": {"ants": {"module": "m.py", "env": "e.yaml"}}})


def test_every_builtin_has_its_env_name_and_schema_section():
    from suitsbench.names import METHOD_NAMES

    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    for key, (module, env, name) in BUILTIN.items():
        assert (ROOT / "workflow" / "envs" / f"{env}.yaml").is_file(), env
        assert METHOD_NAMES[key] == name
        assert key in schema["properties"], key


@pytest.mark.parametrize("key, module", [("convexadam", "convexAdam"), ("ants", "ants")])
def test_schema_defaults_equal_the_modules_defaults(key, module):
    pytest.importorskip(module)
    import importlib

    defaults = importlib.import_module(BUILTIN[key][0]).DEFAULTS
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    props = schema["properties"][key]["properties"]
    assert set(props) == set(defaults)
    for name, value in defaults.items():
        assert props[name]["default"] == value, name
