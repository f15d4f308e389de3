"""Where the bundled models and configurations are found: checkout, $PERCEPTION_DATA, or a wheel's
installed copy (a real wheel, installed without the checkout beside it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from perception.paths import DATA_ROOT, data_root

REPO = Path(__file__).resolve().parents[1]


def test_the_checkout_is_the_data_root_of_a_source_tree():
    assert DATA_ROOT == REPO
    assert (DATA_ROOT / "engines" / "camvid_lite0_panoptic.onnx").is_file()


def test_resolution_order(tmp_path):
    site = tmp_path / "site" / "perception"  # an installed package: nothing beside it
    site.mkdir(parents=True)
    prefix = tmp_path / "venv"
    own = tmp_path / "mine"
    assert data_root(environ={}, package_dir=site, prefix=str(prefix)) == site.parent  # nothing anywhere
    (prefix / "share" / "perception" / "engines").mkdir(parents=True)
    assert data_root(environ={}, package_dir=site, prefix=str(prefix)) == prefix / "share" / "perception"
    (site.parent / "engines").mkdir()  # a folder named engines in site-packages is no checkout
    assert data_root(environ={}, package_dir=site, prefix=str(prefix)) == prefix / "share" / "perception"
    (site.parent / "pyproject.toml").touch()  # a checkout wins over an installed copy
    assert data_root(environ={}, package_dir=site, prefix=str(prefix)) == site.parent
    env = {"PERCEPTION_DATA": str(own)}
    assert data_root(environ=env, package_dir=site, prefix=str(prefix)) == own  # the override wins
    assert data_root(environ={"PERCEPTION_DATA": ""}, package_dir=site, prefix=str(prefix)) == site.parent


def test_a_wheel_install_finds_the_bundled_model_and_config(tmp_path):
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ there
    for name in ("perception", "engines", "configs", "media"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "cache"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src), "-w",
         str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=240,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("perception-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for rel in ("engines/camvid_lite0_panoptic.onnx", "engines/camvid_lite0_panoptic.card.json",
                "engines/sim_reid.onnx", "configs/default.yaml", "media/solidWhiteRight.mp4",
                "media/solidWhiteRight.LICENSE"):
        assert any(n.endswith(".data/data/share/perception/" + rel) for n in names), rel
    # a fresh environment with the wheel installed by its own pip (which sees only that
    # environment: a pip of this one given --prefix would uninstall this checkout's install first);
    # the dependencies then come from this environment through a .pth file
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = (
        "import perception, perception.config as c, perception.tracking.reid as r;"
        "print(perception.__file__); print(c.DEFAULT_MODEL); print(c.DEFAULT_CONFIG); print(r.DEFAULT_REID_MODEL);"
        "print(c.load_config(None).model.resolved_path()); print(c.load_config(None).source.uri)"
    )
    r = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                       env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr[-2000:]
    package, *paths = [Path(line) for line in r.stdout.split()]
    assert package.is_relative_to(site)  # the installed copy, not this checkout
    for p in paths:
        assert p.is_relative_to(venv / "share" / "perception") and p.is_file(), p
