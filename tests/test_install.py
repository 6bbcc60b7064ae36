"""Packaging: TensorFlow is an extra (`rlnorm[cpu]` / `rlnorm[gpu]`), so a missing TensorFlow
must be named, with the fix, the moment rlnorm is imported."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_without_tensorflow_names_the_extras():
    # -S: no site-packages, so TensorFlow cannot be found; rlnorm itself comes from the repo.
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); import rlnorm"
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "rlnorm needs TensorFlow" in out.stderr
    assert "pip install 'rlnorm[cpu]'" in out.stderr and "'rlnorm[gpu]'" in out.stderr
