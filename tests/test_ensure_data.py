"""scripts/ensure-data.sh: which folders count as holding Fashion-MNIST (only file names are checked)."""

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "ensure-data.sh"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def run(tmp_path, nsr_data: Path) -> subprocess.CompletedProcess:
    """The script with no Debian folder (its argument) and the cache root inside ``tmp_path``."""
    env = {**os.environ, "NSR_DATA": str(nsr_data), "NSR_CACHE": str(tmp_path / "cache")}
    return subprocess.run([SCRIPT, tmp_path / "no-debian-folder"], env=env, capture_output=True, text=True)


def touch_synthetic_idx_files(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).touch()


def test_all_four_idx_files_in_nsr_data_gzipped_or_not(tmp_path):
    touch_synthetic_idx_files(tmp_path / "data", [f"{name}.gz" for name in IDX_FILES[:2]] + list(IDX_FILES[2:]))
    result = run(tmp_path, tmp_path / "data")
    assert result.returncode == 0 and f"found in NSR_DATA={tmp_path / 'data'}" in result.stdout


def test_one_idx_file_is_not_enough_and_the_cache_folder_counts(tmp_path):
    touch_synthetic_idx_files(tmp_path / "data", ["train-images-idx3-ubyte.gz"])
    touch_synthetic_idx_files(tmp_path / "cache" / "data" / "FashionMNIST" / "raw", IDX_FILES)
    result = run(tmp_path, tmp_path / "data")
    assert result.returncode == 0, result.stderr
    assert "NSR_DATA" not in result.stdout and f"found in {tmp_path / 'cache' / 'data'}" in result.stdout
