"""Packaging: TensorFlow is an extra (`rlnorm[cpu]` / `rlnorm[gpu]`), so a missing TensorFlow
must be named, with the fix, the moment rlnorm is imported."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_without_tensorflow_works_and_training_names_the_extras():
    # TensorFlow hidden from every import finder, as on a machine where it was never installed.
    code = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'tensorflow':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "import importlib.util\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'tensorflow' else 1\n"
        "import rlnorm; print(sorted(rlnorm.__all__)); rlnorm.train('CartPole-v1')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "'train'" in out.stdout  # the import itself worked
    assert "rlnorm needs TensorFlow" in out.stderr
    assert "pip install 'rlnorm[cpu]'" in out.stderr and "'rlnorm[gpu]'" in out.stderr
