"""The conda env files (workflow/envs/*.yaml) pin exactly the versions of the pip set-up
(requirements.txt, requirements-nodeps.txt) but for the listed departures, every rule names
one of them, and no env can end up with plain SimpleITK beside SimpleITK-SimpleElastix."""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = sorted((ROOT / "workflow" / "envs").glob("*.yaml"))
# conda-forge names of the same distributions
CONDA_TO_PIP = {"matplotlib-base": "matplotlib"}


def norm(name: str) -> str:
    name = CONDA_TO_PIP.get(name.lower(), name.lower())
    return re.sub(r"[-_.]+", "-", name)


#: the only env pins that differ from the pip set-up, each for a declared dependency of the
#: package the env exists for (the env file's header says why)
DEPARTURES = {
    "ants.yaml": {"numpy": "2.3.5", "scipy": "1.15.3"},          # antspyx: numpy<2.4, scipy<1.16
    "convexadam.yaml": {"simpleitk": "2.5.7"},                    # convexadam: SimpleITK
}


def requirements(files=("requirements.txt", "requirements-nodeps.txt")) -> dict[str, str]:
    pins = {}
    for file in files:
        for line in (ROOT / file).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                name, version = line.split("==")
                pins[norm(name)] = version
    return pins


def env_pins(path: Path) -> dict[str, str]:
    spec = yaml.safe_load(path.read_text())
    pins: dict[str, str] = {}
    for dep in spec["dependencies"]:
        if isinstance(dep, dict):
            for item in dep.get("pip", []):
                if item.startswith(("-", ".")):
                    continue
                assert "==" in item, f"{path.name}: pip entry {item!r} is not pinned with =="
                name, version = item.split("==")
                pins[norm(name)] = version
            continue
        name, _, version = dep.partition("=")
        if name in ("python", "pip"):
            continue
        assert version and not version.startswith("="), \
            f"{path.name}: conda entry {dep!r} is not pinned as name=version"
        pins[norm(name)] = version
    return pins


def test_there_are_env_files():
    assert {p.stem for p in ENVS} >= {"data", "suits", "baselines", "report", "snakemake"}


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_pins_equal_requirements(path):
    req = requirements()
    pins = env_pins(path)
    assert pins, f"{path.name} pins nothing"
    departures = DEPARTURES.get(path.name, {})
    for name, version in pins.items():
        if name in departures:
            assert version == departures[name], f"{path.name}: {name} {version}"
            continue
        assert name in req, f"{path.name}: {name} is not in requirements.txt"
        assert version == req[name], f"{path.name}: {name} {version} != requirements.txt {req[name]}"
    assert set(departures) <= set(pins), f"{path.name}: departures {departures} not pinned"


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_plain_simpleitk_never_beside_simpleelastix(path):
    """Only the convexadam env has plain SimpleITK (its package declares it), and no env has
    both; SimpleITK-SimpleElastix provides the same module."""
    pins = env_pins(path)
    text = path.read_text().lower()
    plain = "simpleitk" in pins or re.search(r"^\s*-\s*simpleitk\s*[=<>]", text, re.M)
    if plain:
        assert path.name == "convexadam.yaml", f"{path.name} installs plain SimpleITK"
        assert "simpleitk-simpleelastix" not in pins, f"{path.name} has both SimpleITK flavours"


def test_ants_env_satisfies_the_bounds_antspyx_declares():
    from packaging.requirements import Requirement

    declared = [Requirement(r) for r in importlib.metadata.requires("antspyx") or []]
    pins = env_pins(ROOT / "workflow" / "envs" / "ants.yaml")
    for r in declared:
        if norm(r.name) in ("numpy", "scipy"):
            assert r.specifier.contains(pins[norm(r.name)]), (r, pins[norm(r.name)])
            # the pip set-up's version is outside the bound: the reason for the departure
            assert not r.specifier.contains(requirements()[norm(r.name)]), r


@pytest.mark.parametrize("dist", ["antspyx", "convexadam"])
def test_what_the_nodeps_packages_declare_is_pinned(dist):
    """requirements-nodeps.txt installs them without their dependencies, so every dependency
    they declare is pinned in requirements.txt, but plain SimpleITK (provided by
    SimpleITK-SimpleElastix)."""
    from packaging.requirements import Requirement

    req = requirements(("requirements.txt",))
    declared = [Requirement(r) for r in importlib.metadata.requires(dist) or []]
    for r in declared:
        if r.marker is not None and "extra" in str(r.marker):
            continue
        if norm(r.name) == "simpleitk":
            assert "simpleitk-simpleelastix" in req
            continue
        assert norm(r.name) in req, f"{dist} needs {r.name}: pin it in requirements.txt"
    assert requirements(("requirements-nodeps.txt",))[norm(dist)] == importlib.metadata.version(dist)


def test_requirements_pin_the_important_versions():
    req = requirements()
    assert req["simpleitk-simpleelastix"] == "3.0.0a1.post183"
    assert req["voxelmorph"] == "0.3.4" and req["neurite"] == "0.3.4"
    assert req["snakemake"].startswith("9.")
    assert req["torch"] == "2.13.0"
    assert "simpleitk" not in req


def test_every_rule_has_a_conda_env_log_and_benchmark():
    rules = ROOT / "workflow" / "rules"
    text = "\n".join(p.read_text() for p in sorted(rules.glob("*.smk")))
    blocks = re.split(r"^\s*rule (\w+):", text, flags=re.M)[1:]
    names = blocks[0::2]
    assert len(names) >= 15, names
    for name, body in zip(names, blocks[1::2]):
        for key in ("conda:", "log:", "benchmark:", "threads:", "resources:"):
            assert key in body, f"rule {name} has no {key}"
        env = re.search(r'conda:\s*\n\s*ENVS\["(\w+)"\]', body)
        if re.search(r"conda:\s*\n\s*module_env\s*\n", body):
            continue  # register_module: one env per module method (test_module_methods.py)
        assert env and (ROOT / "workflow" / "envs" / f"{env.group(1)}.yaml").exists(), name


def test_paper_config_follows_the_paper_where_it_is_explicit():
    """config/paper.yaml: test-time image warping (Fig. 1, Algorithm 1), k_back in [0, 15], the
    gradient through b only (Sec. 3.2.2), and the paper's training budget."""
    root = Path(__file__).resolve().parents[1]
    paper = yaml.safe_load((root / "config" / "paper.yaml").read_text())
    assert paper["register"]["warp_space"] == "image"
    assert (paper["suits"]["k_min"], paper["suits"]["k_max"]) == (0, 15)
    assert paper["suits"]["grad_A"] is False
    assert (paper["suits"]["steps"], paper["suits"]["batch"], paper["suits"]["lr"]) == (250, 3, 1e-5)
