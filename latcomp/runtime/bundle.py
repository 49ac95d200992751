"""Reading a bundle directory: the manifest `latcomp.json` and a check of every file it lists.

The format is described in docs/BUNDLE.md. A bundle is refused, with the offending file named, when its
format or version is not ours, a listed file is missing, or a size or sha256 does not match.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

FORMAT = "latcomp-bundle"
FORMAT_VERSION = 1
MANIFEST = "latcomp.json"
DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "default_bundle"
REQUIRED_KEYS = ("name", "version", "resolution", "latent_shape", "z_dim", "generator", "regressor", "graphs",
                 "files", "max_batch")


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and says what is wrong."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def resolution(self) -> int:
        return int(self.manifest["resolution"])

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.manifest["latent_shape"])

    @property
    def z_dim(self) -> int:
        return int(self.manifest["z_dim"])

    def has_graph(self, graph: str) -> bool:
        return graph in self.manifest["graphs"]

    def graph_path(self, graph: str) -> Path:
        if not self.has_graph(graph):
            available = ", ".join(sorted(self.manifest["graphs"]))
            raise BundleError(f"{self.path / MANIFEST}: no graph {graph!r} in this bundle "
                              f"(it has {available})")
        return self.path / self.manifest["graphs"][graph]["file"]


def _inside(relative) -> bool:
    """Whether a path from the manifest names something inside the bundle directory (relative, no '..'):
    symbolic links that lead outside are refused when the files are verified."""
    if not isinstance(relative, str) or not relative:
        return False
    path = PurePosixPath(relative)
    return not path.is_absolute() and ".." not in path.parts and not PureWindowsPath(relative).drive


def _load_manifest(path: Path) -> dict:
    manifest_path = path / MANIFEST
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle directory")
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing; a bundle directory holds its manifest {MANIFEST}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{manifest_path}: not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise BundleError(f"{manifest_path}: format is {found!r}, expected {FORMAT!r}")
    if "format_version" not in manifest:
        raise BundleError(f"{manifest_path}: no format_version (this latcomp reads version {FORMAT_VERSION})")
    if manifest["format_version"] != FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: format_version {manifest['format_version']!r} is not supported "
                          f"(this latcomp reads version {FORMAT_VERSION})")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"{manifest_path}: missing keys {', '.join(missing)}")
    named = [*manifest["files"], *(graph["file"] for graph in manifest["graphs"].values()),
             *(plan.get("file") for plan in manifest.get("plans") or [])]
    outside = [repr(name) for name in named if not _inside(name)]
    if outside:  # checked even when the files are not verified: nothing may be read from outside
        raise BundleError(f"{manifest_path}: {', '.join(outside)} lie outside the bundle (paths in the "
                          "manifest are relative to it, without '..')")
    unlisted = [graph["file"] for graph in manifest["graphs"].values()
                if graph["file"] not in manifest["files"]]
    if unlisted:
        raise BundleError(f"{manifest_path}: graph files {', '.join(unlisted)} are not listed under 'files'")
    return manifest


def _verify_file(root: Path, relative: str, entry: dict) -> None:
    path = root / relative
    if root not in path.resolve().parents:
        raise BundleError(f"{root / MANIFEST}: file {relative!r} lies outside the bundle")
    if not path.is_file():
        raise BundleError(f"{path}: missing (listed in {MANIFEST})")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise BundleError(f"{path}: {size} bytes, but {MANIFEST} says {entry['bytes']}: the file was changed "
                          "or truncated")
    if sha256_file(path) != entry["sha256"]:
        raise BundleError(f"{path}: sha256 does not match {MANIFEST}: the file was changed or is corrupt")


def read_bundle(path: str | Path, verify: bool = True) -> Bundle:
    """Reads and checks a bundle directory (sizes and sha256 of every listed file unless verify=False)."""
    root = Path(path).resolve()
    manifest = _load_manifest(root)
    if verify:
        for relative, entry in manifest["files"].items():
            _verify_file(root, relative, entry)
    return Bundle(root, manifest)


def read_manifest(path: str | Path) -> dict:
    """The manifest of a bundle directory, after the same checks as read_bundle."""
    return read_bundle(path).manifest
