"""The conformance vectors in tests/data/conformance are the team's ../shared/conformance, unmodified.

Every file matches tests/data/conformance.sha256 (so a clone without ../shared still proves its copy intact)
and, where ../shared/conformance exists beside the repository, the shared files byte for byte; every weight
array the recipe rebuilds matches the sha256 its manifest lists.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import CONFORMANCE, REPO, _make_weights_module

CHECKSUMS = CONFORMANCE.parent / "conformance.sha256"
SHARED = REPO.parent / "shared" / "conformance"
MODELS = sorted(path.parent.name for path in CONFORMANCE.glob("*/manifest.json"))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listed_checksums() -> dict[str, str]:
    """{path relative to tests/data: sha256} from the `sha256sum` listing."""
    rows = (line.split(maxsplit=1) for line in CHECKSUMS.read_text().splitlines() if line.strip())
    return {name.strip(): digest for digest, name in rows}


def test_every_model_folder_is_present():
    assert MODELS == ["pipeline", "proggan_encoder", "proggan_generator", "stylegan2_generator",
                      "stylegan_encoder"]


def folder_checksums(folder: Path) -> dict[str, str]:
    return {f"conformance/{path.relative_to(folder)}": file_sha256(path)
            for path in sorted(folder.rglob("*")) if path.is_file()}


def test_files_match_the_checksum_listing_and_shared():
    listed, ours = listed_checksums(), folder_checksums(CONFORMANCE)
    added, missing = set(ours) - set(listed), set(listed) - set(ours)
    assert not added and not missing, f"files added {added}, missing {missing}"
    assert not [name for name in ours if ours[name] != listed[name]], "tests/data/conformance was modified"
    if SHARED.is_dir():  # the team's checkout: the copy must still be the shared vectors, byte for byte
        assert folder_checksums(SHARED) == ours, "tests/data/conformance differs from ../shared/conformance"


@pytest.mark.parametrize("name", [m for m in MODELS if m != "pipeline"])  # the pipeline reuses the others
def test_rebuilt_weights_match_manifest_sha256(name):
    manifest = json.loads((CONFORMANCE / name / "manifest.json").read_text())
    assert all("sha256" in entry for entry in manifest["state_dict"])
    weights = _make_weights_module().make_weights(manifest, check=True)  # raises on any mismatch
    assert list(weights) == [entry["key"] for entry in manifest["state_dict"]]
