"""The wheel is the product: it routes and renders on its own, and holds nothing of the lab.

The wheel is built from a copy of the checkout's files (those git tracks, and new ones it does not
ignore), with the virtualenv's own setuptools and no build isolation, so nothing is downloaded and
no stale build/ folder of the checkout can slip into it. It is installed with --no-deps into a
fresh virtualenv in tmp_path. Its runtime dependencies come from the test's own virtualenv,
without a download: the closure of the wheel's Requires-Dist (no extras; following the extras
that requirements name, such as pydantic-settings[yaml]) is read from the installed
distributions' metadata, each distribution's files (from its RECORD: packages, modules, shared
libraries, dist-info) are linked into one folder, and a .pth file puts that folder on the fresh
virtualenv's path. Nothing else of the test's virtualenv is visible there: not pyVoIP, not the
checkout, not the lab or the tests. `pip check` in the fresh virtualenv confirms that what is
linked satisfies every Requires-Dist of the wheel, and the commands run from tmp_path with
PYTHONPATH unset, as an operator would run them. All of it takes about 6 s.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.message import Message
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.checkout import checkout_files
from verbund112 import asterisk_config, asterisk_install

pytestmark = pytest.mark.wheel

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("verbund112", "telephony", "routing", "overflow", "web", "aml")
# top-level folders of the checkout that ship inside the package
SHIPPED = {"rules": "verbund112/shipped/rules", "asterisk-config": "verbund112/shipped/asterisk_config"}
GERA_LANDLINE = "0365123456"  # Ortsnetz 0365: Gera (rules/area_codes.yaml), Gera's centre is ZLS Gera
JENA_LANDLINE = "036419876543"  # Ortsnetz 03641: Jena
TOOLING = re.compile(r"bench|sipp|pyvoip|desks|agi_client|aml_server|^lab/|^tests/", re.I)


def run(args: list[str | Path], **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, check=False, **options)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in checkout_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                 "-w", dist, source])  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = dist.glob("verbund112-*.whl")
    return found


def wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if re.fullmatch(r"verbund112-[^/]+\.dist-info/METADATA", n)]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def runtime_requirements(wheel: Path) -> list[Requirement]:
    requirements = [Requirement(line) for line in wheel_metadata(wheel).get_all("Requires-Dist") or []]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def installed_closure(requirements: list[Requirement]) -> list[importlib.metadata.Distribution]:
    """The distributions of this virtualenv that the requirements need, transitively."""
    found: dict[str, tuple[importlib.metadata.Distribution, set[str]]] = {}
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in found and extras <= found[name][1]:
            continue
        distribution = importlib.metadata.distribution(requirement.name)
        extras |= found[name][1] if name in found else set()
        found[name] = (distribution, extras)
        for line in distribution.requires or []:
            needed = Requirement(line)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in {"", *extras}):
                todo.append(needed)
    return [distribution for distribution, _ in found.values()]


def link_distributions(distributions: list[importlib.metadata.Distribution], folder: Path) -> None:
    folder.mkdir()
    for distribution in distributions:
        assert distribution.files, f"{distribution.metadata['Name']}: no RECORD, cannot tell its files"
        for top in {f.parts[0] for f in distribution.files if f.parts[0] not in {"..", "__pycache__"}}:
            link = folder / top
            if not link.exists():
                link.symlink_to(Path(str(distribution.locate_file(top))))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("venv")
    made = run([sys.executable, "-m", "venv", "--without-pip", root])
    assert made.returncode == 0, made.stderr
    python = root / "bin/python"
    pip = [sys.executable, "-m", "pip", "--python", python]
    installed = run([*pip, "install", "-q", "--no-deps", "--no-index", wheel])
    assert installed.returncode == 0, installed.stdout + installed.stderr
    deps = root / "runtime-dependencies"
    link_distributions(installed_closure(runtime_requirements(wheel)), deps)
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    (Path(purelib) / "runtime-dependencies.pth").write_text(f"{deps}\n")
    checked = run([*pip, "check"])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return root


@pytest.fixture
def operator_env() -> dict[str, str]:
    """The environment of an operator's shell: not inside the checkout or its virtualenv."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {key: value for key, value in os.environ.items() if key not in drop}


def test_the_wheel_holds_the_product_and_nothing_of_the_lab(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    tops = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert tops == set(PRODUCT)
    assert [name for name in names if TOOLING.search(name)] == []
    # the packages are listed by hand in pyproject.toml: every product file of the checkout must be in
    expected = set()
    for name in checkout_files():
        top, _, rest = name.partition("/")
        if top in SHIPPED:
            expected.add(f"{SHIPPED[top]}/{rest}")
        elif top in PRODUCT and (name.endswith(".py") or name.startswith("web/static/")):
            expected.add(name)
    assert expected - names == set()
    assert {
        "verbund112/shipped/rules/verbund112.yaml",
        "verbund112/shipped/asterisk_config/sites/jena.yaml",
        "web/openapi.yaml",
    } <= names


def test_the_runtime_dependencies_do_not_name_pyvoip(wheel: Path) -> None:
    runtime = runtime_requirements(wheel)
    assert {canonicalize_name(r.name) for r in runtime} >= {"aiohttp", "panoramisk", "shapely"}
    assert "pyvoip" not in {canonicalize_name(r.name) for r in runtime}
    every = [Requirement(line) for line in wheel_metadata(wheel).get_all("Requires-Dist") or []]
    assert any(canonicalize_name(r.name) == "pyvoip" for r in every)  # only for the lab (extra "lab")


def test_the_installed_wheel_routes_a_gera_landline_from_jena_to_the_partner(
    venv: Path, tmp_path: Path, operator_env: dict[str, str]
) -> None:
    def simulate(number: str) -> dict[str, object]:
        result = run([venv / "bin/verbund112", "rules", "simulate", "--site", "jena", "--number", number, "--json"],
                     cwd=tmp_path, env=operator_env)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    gera = simulate(GERA_LANDLINE)
    assert (gera["route"], gera["centre"]) == ("partner", "gera")
    assert gera["location"] == {**gera["location"], "source": "area_code", "district": "Gera"}
    jena = simulate(JENA_LANDLINE)
    assert (jena["route"], jena["centre"]) == ("local", "jena")


def test_the_installed_wheel_renders_the_asterisk_configuration(
    venv: Path, tmp_path: Path, operator_env: dict[str, str]
) -> None:
    site = asterisk_config.load_site("jena")
    secrets = {
        "VERBUND112_AMI_SECRET": "wheel-test-ami-secret",
        "VERBUND112_FASTAGI_SECRET": "wheel-test-fastagi-secret",
    }
    secrets |= {
        f"VERBUND112_DISPATCHER_PASSWORD_{s.upper().replace('-', '_')}": f"pw-{s}-0123" for s in site.dispatchers
    }
    out = tmp_path / "etc-asterisk"
    result = run([venv / "bin/verbund112", "asterisk-config", "render", "--site", "jena", "--out", out,
                  "--owner", "root:root"], cwd=tmp_path, env={**operator_env, **secrets})  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # the same files as the checkout renders: the wheel's templates and site values are the shipped ones
    expected = asterisk_config.render(site, asterisk_config.SiteSecrets.from_environment(site, secrets))
    assert {p.name: p.read_text() for p in out.iterdir() if p.name != asterisk_install.MANIFEST} == expected


def test_the_installed_wheel_knows_its_version_and_checks_a_configuration(
    venv: Path, tmp_path: Path, operator_env: dict[str, str]
) -> None:
    result = run([venv / "bin/verbund112", "--version"], cwd=tmp_path, env=operator_env)
    assert result.stdout == f"verbund112 {version('verbund112')}\n", result.stderr
    config = tmp_path / "gera.yaml"
    config.write_text("site: gera\npartner: jena\n")
    env = {**operator_env, "VERBUND112_FASTAGI__SECRET": "wheel-test-fastagi-secret"}
    result = run([venv / "bin/verbund112", "check-config", "--config", config, "--asterisk-dir", tmp_path / "none"],
                 cwd=tmp_path, env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    # the rules and the Asterisk templates and site values it checked are the wheel's own
    assert "site-packages/verbund112/shipped/rules/verbund112.yaml" in result.stdout
    assert "Asterisk gera: 20 files rendered" in result.stdout


def test_the_lab_the_tests_and_pyvoip_are_not_there(venv: Path, tmp_path: Path, operator_env: dict[str, str]) -> None:
    for module in ("lab", "lab.cli", "tests", "tests.support", "pyVoIP"):
        result = run([venv / "bin/python", "-c", f"import {module}"], cwd=tmp_path, env=operator_env)
        assert result.returncode == 1, module
        assert "ModuleNotFoundError" in result.stderr, result.stderr
    lab = run([venv / "bin/verbund112", "lab", "status"], cwd=tmp_path, env=operator_env)
    assert lab.returncode == 2
    assert "No such command 'lab'" in lab.stderr
    # and every module of the product imports without them
    imported = run([venv / "bin/python", "-c", IMPORT_ALL, *PRODUCT], cwd=tmp_path, env=operator_env)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.split() == [str(n) for n in range(len(PRODUCT))] and "verbund112.service" in imported.stderr


IMPORT_ALL = """
import importlib, pkgutil, sys
for n, top in enumerate(sys.argv[1:]):
    package = importlib.import_module(top)
    for module in pkgutil.walk_packages(package.__path__, top + "."):
        if not module.name.endswith(".__main__"):  # that one runs the command line
            importlib.import_module(module.name)
            print(module.name, file=sys.stderr)
    print(n)
"""
