import subprocess
import sys

CODE = "from shared.failpoints import failpoint\nfor i in range(5):\n    print(i, flush=True)\n    failpoint('x')\n"


def run(spec: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CODE], env={"RLHF_FAILPOINTS": spec, "PYTHONPATH": "."},
                          capture_output=True, text=True)


def test_unarmed_failpoint_does_nothing():
    result = run("")
    assert result.returncode == 0 and result.stdout.split() == ["0", "1", "2", "3", "4"]


def test_armed_failpoint_kills_on_nth_hit():
    result = run("other,x@3")
    assert result.returncode == -9
    assert result.stdout.split() == ["0", "1", "2"]
