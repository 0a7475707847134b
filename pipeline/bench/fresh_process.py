"""Benchmarks that measure peak memory run the measured code in a fresh Python process, whose `ru_maxrss` is
then its own."""

import json
import subprocess


def fresh_process_result(argv: list[str], what: str) -> dict:
    """Run `argv` (a benchmark's worker mode) → the JSON object its stdout ends with; `RuntimeError` with the
    end of its stderr when it fails."""
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
