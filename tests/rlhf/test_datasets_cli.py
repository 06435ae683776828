"""`rlhf datasets export` refuses an --out it cannot write before it asks for an export (an export
made for nothing would still become the dataset's newest version)."""

import os
import subprocess
import sys

from shared.infra import free_port


def test_an_unwritable_out_path_fails_before_anything_is_exported(tmp_path):
    # Nothing listens at --url: an attempt to export would fail differently (exit 1, a connection error).
    nowhere = f"http://127.0.0.1:{free_port()}"
    for out, reason in ((tmp_path / "missing" / "dir" / "train.jsonl", "does not exist"),
                        (tmp_path, "is a directory")):
        run = subprocess.run(
            [sys.executable, "-m", "rlhf.cli", "datasets", "export", "00000000-0000-4000-8000-000000000000",
             "--format", "jsonl", "--out", str(out), "--url", nowhere],
            env=dict(os.environ, RLHF_API_KEY="rlhf_test"), capture_output=True, text=True, timeout=60,
        )
        assert run.returncode == 2, run.stderr
        assert "cannot write the export" in run.stderr and reason in run.stderr
