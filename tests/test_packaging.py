"""A non-editable install (`pip install .`) of Baton works on its own: the board's frontend is
packaged, and baton-dashboard serves it from site-packages, far from any checkout."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import httpx

from support import ROOT, free_port, wait_for_http

# What a build may not see or write into: runtime state, caches and earlier build output.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", "data", "logs", "worktrees", "tasks", "test-artifacts", "build", "dist", "*.egg-info",
    "__pycache__", ".pytest_cache", ".hypothesis", ".venv", "node_modules",
)


def _make_venv(venv: Path) -> Path:
    """A venv that sees the packages of the interpreter running the tests (its dependencies,
    pip and setuptools), wherever they are installed. Not `--system-site-packages`: from inside
    a venv (CI runs `.venv/bin/python -m pytest`) that shows the *base* interpreter's packages,
    which do not have them. The running interpreter's site directories are listed in a `.pth` as
    plain paths, after the venv's own: their `.pth` files are not run, so an editable install
    of this checkout stays invisible and the installed copy is the one imported."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    outer = [*site.getsitepackages(), *([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])]
    (Path(purelib) / "outer-site-packages.pth").write_text("".join(f"{d}\n" for d in outer if Path(d).is_dir()))
    return python


def _installed_site(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import backend, pathlib; print(pathlib.Path(backend.__file__).parent)"],
                         capture_output=True, text=True, check=True, cwd=python.parent)
    return Path(out.stdout.strip()).parent


def test_non_editable_install_serves_the_board_from_site_packages(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)  # the build writes build/ and *.egg-info there
    venv = tmp_path / "venv"
    # No pip of its own: the running pip and setuptools (the test extra) build without isolation.
    python = _make_venv(venv)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              str(source)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-3000:]

    # The installed copy is the one that runs, with every backend module the checkout has.
    site = _installed_site(python)
    assert site.is_relative_to(venv), site
    shipped = {p.relative_to(site).as_posix() for p in (site / "backend").rglob("*.py")}
    expected = {p.relative_to(ROOT).as_posix() for p in (ROOT / "backend").rglob("*.py")}
    assert expected <= shipped, f"not packaged (add to [tool.setuptools] packages): {sorted(expected - shipped)}"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "projects.yaml").write_text(
        "projects:\n  - id: demo\n    name: Demo\n    agent_url: http://127.0.0.1:9\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    err = open(tmp_path / "dashboard.err", "w")
    proc = subprocess.Popen([str(venv / "bin" / "baton-dashboard"), "--config", "projects.yaml", "--port", str(port)],
                            cwd=elsewhere, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for_http(f"{url}/api/health", proc)
        page = httpx.get(f"{url}/")
        assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:300]
        for asset in ("/js/app.js", "/css/style.css"):
            answer = httpx.get(f"{url}{asset}")
            assert answer.status_code == 200, (asset, answer.text[:300])
            assert answer.content == (ROOT / "frontend" / asset.lstrip("/")).read_bytes()
        # /docs' own start-up script is package data too.
        assert httpx.get(f"{url}/docs/assets/docs-init.js").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        err.close()
    assert not (ROOT / "build").exists()


def test_editable_install_finds_the_frontend_in_the_checkout() -> None:
    from backend.dashboard.settings import default_frontend_dir

    assert default_frontend_dir() == (ROOT / "frontend").resolve()
