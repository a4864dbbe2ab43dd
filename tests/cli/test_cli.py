import subprocess
import sys


def test_cli_help_lists_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fedrec_app", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "usage: fedrec" in result.stdout
