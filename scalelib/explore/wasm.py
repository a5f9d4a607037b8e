"""Make an ``html-wasm`` export self-contained: the Pyodide runtime and wheels beside the HTML.

``marimo export html-wasm`` writes a folder whose page loads Pyodide and the packages marimo
needs (micropip, msgspec, marimo-base, ...) from public CDNs when it opens. This module puts
them next to the page instead, so the export opens with no network at all:

- the Pyodide core (``pyodide.mjs``, ``pyodide.asm.mjs``, ``pyodide.asm.wasm``,
  ``python_stdlib.zip``) from the npm package ``pyodide`` at the version marimo's frontend
  expects (``npm pack``);
- marimo's runtime wheels from PyPI (``pip download`` for the Pyodide platform tag; all pure
  Python except msgspec, which publishes a ``pyemscripten`` wheel), plus PyYAML repacked as a
  pure-Python wheel (PyYAML falls back to pure Python without its C extension);
- a ``pyodide-lock.json`` listing exactly those wheels (dependencies from their metadata,
  evaluated for Emscripten), and the page's ``<marimo-wasm>`` element pointed at them.

The notebook itself must then need nothing beyond the standard library, marimo and local
pure-Python modules (which ``marimo export html-wasm`` packs as a wheel of its own): Pyodide's
compiled packages (numpy, scipy, polars, pandas) are published only on its CDN, not on npm or
PyPI. Downloads are cached (``$SCALELIB_CACHE``, default ``~/.cache/scalelib``), so only the
first bundling needs the npm and PyPI registries.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from scalelib.errors import ScalelibError

PYODIDE_FILES = ("pyodide.mjs", "pyodide.asm.mjs", "pyodide.asm.wasm", "python_stdlib.zip")
# What marimo's WASM worker loads at start-up and before running a notebook, and their
# dependencies under Emscripten (marimo-base's are read from its metadata).
RUNTIME_PACKAGES = (
    "micropip", "packaging", "markdown", "pymdown-extensions", "narwhals", "docutils",
    "pygments", "jedi", "parso", "pyodide-http", "msgspec", "tomlkit", "itsdangerous",
    "python-multipart",
)
RUNTIME_DIR = "pyodide"
EMSCRIPTEN_MARKERS = {
    "sys_platform": "emscripten", "platform_system": "Emscripten", "os_name": "posix",
    "platform_machine": "wasm32", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "extra": "",
}
# The scalelib modules the explorer imports in the browser (standard library only).
BROWSER_MODULES = (
    "scalelib/__init__.py", "scalelib/errors.py", "scalelib/atomic.py", "scalelib/statuses.py",
    "scalelib/chartspec.py", "scalelib/fitrules.py",
    "scalelib/explore/__init__.py",
    "scalelib/explore/purefit.py", "scalelib/explore/vegalite.py", "scalelib/explore/bundle.py",
)


def marimo_versions() -> tuple[str, str, str]:
    """(marimo version, Pyodide version its frontend loads, Pyodide's Python ``major.minor``)."""
    import marimo
    from marimo._pyodide import pyodide_constraints  # the pins marimo's frontend is built with

    return (marimo.__version__, pyodide_constraints.PYODIDE_VERSION,
            pyodide_constraints.PYODIDE_PYTHON_VERSION)


def cache_root() -> Path:
    """Where downloads are kept (``$SCALELIB_CACHE`` or ``~/.cache/scalelib``)."""
    return Path(os.environ.get("SCALELIB_CACHE") or Path.home() / ".cache" / "scalelib")


def bundle_runtime(export_dir: str | Path, *, cache: str | Path | None = None) -> dict[str, object]:
    """Copy the Pyodide runtime and wheels into ``export_dir/pyodide`` and point the page at them.

    Parameters
    ----------
    export_dir
        Folder written by ``marimo export html-wasm`` (with ``index.html``).
    cache
        Download cache (default :func:`cache_root`).

    Returns
    -------
    dict
        ``pyodide`` (version), ``packages`` (name -> version) and ``size_mb`` of the runtime.
    """
    export_dir = Path(export_dir)
    page = export_dir / "index.html"
    if not page.exists():
        raise ScalelibError(f"no index.html in {export_dir}; run marimo export html-wasm first")
    marimo_version, pyodide_version, python_version = marimo_versions()
    cache = Path(cache or cache_root()) / f"wasm-pyodide-{pyodide_version}-marimo-{marimo_version}"
    core = fetch_pyodide_core(pyodide_version, cache)
    base_lock = json.loads((core / "pyodide-lock.json").read_text())
    platform = f"pyemscripten_{base_lock['info']['abi_version']}_{base_lock['info']['arch']}"
    wheels = fetch_wheels(cache, marimo_version, python_version, platform)
    target = export_dir / RUNTIME_DIR
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    for name in PYODIDE_FILES:
        shutil.copyfile(core / name, target / name)
    for wheel in wheels:
        shutil.copyfile(wheel, target / wheel.name)
    lock = lockfile([target / wheel.name for wheel in wheels], base_lock["info"], python_version)
    (target / "pyodide-lock.json").write_text(json.dumps(lock, indent=1, sort_keys=True))
    point_page_at_runtime(page)
    size = sum(f.stat().st_size for f in target.iterdir()) / 2**20
    return {"pyodide": pyodide_version,
            "packages": {name: entry["version"] for name, entry in lock["packages"].items()},
            "size_mb": round(size, 1)}


def point_page_at_runtime(page: Path) -> None:
    """Set the ``<marimo-wasm>`` element's runtime URLs to the bundled ``./pyodide/``."""
    html = page.read_text()
    element = (f'<marimo-wasm hidden="" data-pyodide-index-url="./{RUNTIME_DIR}/" '
               f'data-pyodide-lockfile-url="./{RUNTIME_DIR}/pyodide-lock.json">')
    html, count = re.subn(r'<marimo-wasm hidden=""[^>]*>', element, html)
    if count != 1:
        raise ScalelibError(f"{page} has no <marimo-wasm> element; is it an html-wasm export "
                            "of this marimo version?")
    page.write_text(html)


def fetch_pyodide_core(version: str, cache: Path) -> Path:
    """The npm package ``pyodide@version`` unpacked in ``cache`` (``npm pack`` on first use)."""
    folder = cache / f"pyodide-npm-{version}"
    if all((folder / name).exists() for name in (*PYODIDE_FILES, "pyodide-lock.json")):
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise ScalelibError("bundling the Pyodide runtime needs npm (to fetch the npm package "
                            f"pyodide@{version}); install Node.js, or export with --runtime cdn")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        _run([npm, "pack", f"pyodide@{version}", "--silent"], cwd=scratch,
             what=f"npm pack pyodide@{version}")
        archive = next(Path(scratch).glob("pyodide-*.tgz"))
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers()
                       if m.isfile() and Path(m.name).name in (*PYODIDE_FILES,
                                                                "pyodide-lock.json")]
            staging = Path(scratch) / "unpacked"
            staging.mkdir()
            for member in members:
                with tar.extractfile(member) as source:
                    (staging / Path(member.name).name).write_bytes(source.read())
        if folder.exists():
            shutil.rmtree(folder)
        shutil.move(str(staging), folder)
    return folder


def fetch_wheels(cache: Path, marimo_version: str, python_version: str,
                 platform: str) -> list[Path]:
    """marimo-base, its runtime dependencies and micropip as wheels for Pyodide (cached).

    ``platform`` is the Pyodide wheel tag (``pyemscripten_2026_0_wasm32`` for Pyodide 314).
    """
    folder = cache / "wheels"
    marker = folder / ".complete"
    if not marker.exists():
        folder.mkdir(parents=True, exist_ok=True)
        abi = "cp" + python_version.replace(".", "")
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
              "--no-deps", "--only-binary=:all:", "--platform", platform,
              "--platform", "any", "--python-version", python_version,
              "--implementation", "cp", "--abi", abi, "--abi", "none", "--dest", str(folder),
              f"marimo-base=={marimo_version}", *RUNTIME_PACKAGES],
             what="pip download of marimo's Pyodide wheels")
        pure_pyyaml_wheel(folder)
        marker.write_text("")
    return sorted(folder.glob("*.whl"))


def pure_pyyaml_wheel(folder: Path) -> Path:
    """A ``py3-none-any`` wheel of the installed PyYAML's Python sources (no C extension)."""
    import yaml

    version = metadata.version("PyYAML")
    path = folder / f"pyyaml-{version}-py3-none-any.whl"
    info = f"pyyaml-{version}.dist-info"
    files = {f"yaml/{source.name}": source.read_bytes()
             for source in sorted(Path(yaml.__file__).parent.glob("*.py"))}
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: PyYAML\nVersion: {version}\n".encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: scalelib\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n")
    records = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*records, f"{info}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def lockfile(wheels: list[Path], info: dict, python_version: str) -> dict[str, object]:
    """A ``pyodide-lock.json`` of ``wheels``, dependencies from their metadata (Emscripten)."""
    from packaging.requirements import Requirement

    environment = {**EMSCRIPTEN_MARKERS, "python_version": python_version,
                   "python_full_version": f"{python_version}.0"}
    entries: dict[str, dict] = {}
    requirements: dict[str, list[str]] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
            text = archive.read(meta).decode()
        name = _canonical(_header(text, "Name"))
        entries[name] = {
            "name": name, "version": _header(text, "Version"), "file_name": wheel.name,
            "install_dir": "site", "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
            "package_type": "package", "imports": _top_level(names), "depends": [],
            "unvendored_tests": False, "shared_library": False,
        }
        requirements[name] = [line.split(":", 1)[1].strip() for line in text.splitlines()
                              if line.startswith("Requires-Dist:")]
    for name, lines in requirements.items():
        depends = []
        for line in lines:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                depends.append(_canonical(requirement.name))
        missing = [d for d in depends if d not in entries]
        if name == "marimo-base" and missing:
            raise ScalelibError(f"marimo-base needs {', '.join(missing)} under Pyodide, which "
                                "the runtime bundle lacks; add them to RUNTIME_PACKAGES")
        entries[name]["depends"] = sorted(d for d in depends if d in entries)
    return {"info": info, "packages": dict(sorted(entries.items()))}


def stage_browser_modules(source_root: Path, stage: Path) -> list[Path]:
    """Copy :data:`BROWSER_MODULES` from ``source_root`` into ``stage`` (same layout)."""
    copied = []
    for relative in BROWSER_MODULES:
        target = stage / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_root / relative, target)
        copied.append(target)
    return copied


def _header(text: str, key: str) -> str:
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            return line.split(":", 1)[1].strip()
    raise ScalelibError(f"wheel metadata without {key}")


def _top_level(names: list[str]) -> list[str]:
    tops = set()
    for name in names:
        first = name.split("/")[0]
        if first.endswith((".dist-info", ".data")):
            continue
        first = first.removesuffix(".py")
        if first.isidentifier():
            tops.add(first)
    return sorted(tops)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _digest(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _run(command: list[str], *, cwd: str | Path | None = None, what: str) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ScalelibError(f"{what} failed ({' / '.join(detail)}); check access to the npm "
                            "and PyPI registries, or export with --runtime cdn")
