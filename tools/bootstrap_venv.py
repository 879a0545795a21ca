"""Create the project's virtualenv, even where Debian's python3-venv is not installed.

Debian's plain ``python3`` ships the ``venv`` module but not ``ensurepip``, so
``python3 -m venv`` fails there. In that case the venv is created without pip and pip is
installed from its own wheel, fetched from PyPI (pip can run from its wheel file).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import venv
from pathlib import Path

PYPI_JSON = "https://pypi.org/pypi/pip/json"


def _pip_wheel(dest: Path) -> Path:
    with urllib.request.urlopen(PYPI_JSON, timeout=60) as resp:
        meta = json.load(resp)
    wheel = next(u for u in meta["urls"] if u["filename"].endswith("-py3-none-any.whl"))
    path = dest / wheel["filename"]
    url = urllib.parse.urljoin(PYPI_JSON, wheel["url"])  # mirrors may answer with relative URLs
    with urllib.request.urlopen(url, timeout=120) as resp:
        path.write_bytes(resp.read())
    return path


def main(argv: list[str] | None = None) -> int:
    target = Path((argv or sys.argv[1:] or [".venv"])[0])
    python = target / "bin" / "python"
    try:
        import ensurepip  # noqa: F401

        venv.EnvBuilder(with_pip=True).create(target)
        return 0
    except ImportError:
        pass
    print(
        "ensurepip is missing (Debian without python3-venv): bootstrapping pip from PyPI",
        file=sys.stderr,
    )
    venv.EnvBuilder(with_pip=False).create(target)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_wheel(Path(tmp))
        subprocess.check_call([str(python), f"{wheel}/pip", "install", "--quiet", str(wheel)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
