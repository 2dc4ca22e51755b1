"""requirements.txt, environment.yml and pyproject.toml name the same packages."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_TO_PIP = {"pytorch": "torch"}
CONDA_ONLY = {"python", "pip"}


def names(lines):
    return {re.split(r"[<>=!~ \[]", line.strip(), maxsplit=1)[0].lower() for line in lines}


def test_requirements_and_environment_yml_agree():
    pip = names(l for l in (ROOT / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#"))
    conda_deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip_section = [d for dep in conda_deps if isinstance(dep, dict) for d in dep.get("pip", [])]  # PyPI only
    conda = {CONDA_TO_PIP.get(n, n) for n in names(d for d in conda_deps if isinstance(d, str))} - CONDA_ONLY
    conda |= names(pip_section)
    assert pip == conda, f"only in requirements.txt: {pip - conda}; only in environment.yml: {conda - pip}"


def test_helpers_dependencies_are_in_the_environment():
    pip = names(l for l in (ROOT / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#"))
    declared = names(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    assert declared <= pip, f"pyproject.toml needs {declared - pip} but requirements.txt does not install them"
