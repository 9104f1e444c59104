"""T07: the graduation audit itself, end to end on a scratch prompt: ten verified
runs graduate it (10:0, an Evolution row); a hand edit of its table makes
`prompts audit` fail and name it; the next run rewrites the table from the
records and the audit passes; a failure after graduation resets it to 0:0
with a row saying why, and the audit still agrees."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from common import REPO, arguments, check, passed, private_executor

PROMPT = """# scratch

## Header

```toml
name = "scratch"
version = 1
command = [
    "{python}", "-c",
    "import os, sys; os.path.exists(sys.argv[1]) and sys.exit(3); print('ran ok', sys.argv[2])",
    "{repo}/FAIL", "{marker}",
]
timeout_s = 30
expect = ["ran ok"]
```

## Prompt

A scratch prompt for T07.

## Gamification Metrics

| Success | Failure | Total | Ratio | Last Updated | Status |
| --- | --- | --- | --- | --- | --- |
| 0 | 0 | 0 | 0:0 | never | active |

## Evolution History

| Version | Date | Change and reason | Result |
| --- | --- | --- | --- |
| 1 | 2026-01-01 | Created | no runs yet |

## Recovery Tests

1. One.
2. Two.
3. Three.
"""


def cli(directory: Path, url: str, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", "prompts", "--dir", str(directory), *words, "--url", url],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def main() -> None:
    args = arguments(__doc__ or "")
    with tempfile.TemporaryDirectory(prefix="t07-") as tmp, private_executor() as executor:
        prompts = Path(tmp) / "prompts"
        prompts.mkdir()
        path = prompts / "scratch.md"
        path.write_text(PROMPT)
        run = cli(prompts, executor.url, "run", "scratch", "--times", "10")
        text = path.read_text()
        check(
            run.returncode == 0 and "| 10 | 0 | 10 | 10:0 |" in text and "| graduated |" in text,
            "10 verified runs: 10:0, status graduated",
            f"after 10 runs: {run.stdout}{run.stderr}",
        )
        check(
            "Graduated at run 10" in text,
            "an Evolution row records the graduation",
            "no graduation row",
        )
        audit = cli(prompts, executor.url, "audit")
        check(audit.returncode == 0, "audit agrees with the records", audit.stdout + audit.stderr)
        path.write_text(text.replace("| 10 | 0 | 10 | 10:0 |", "| 12 | 0 | 12 | 12:0 |"))
        audit = cli(prompts, executor.url, "audit")
        check(
            audit.returncode == 1 and "table says Success 12, the records give 10" in audit.stdout,
            "a hand-edited table (12:0) fails the audit and is named",
            f"audit of the hand edit: {audit.returncode} {audit.stdout}",
        )
        run = cli(prompts, executor.url, "run", "scratch")
        audit = cli(prompts, executor.url, "audit")
        check(
            run.returncode == 0 and audit.returncode == 0 and "| 11 | 0 | 11 |" in path.read_text(),
            "the next run rewrites the table from the records (11:0); audit passes",
            f"{run.stderr} {audit.stdout}",
        )
        (Path(tmp) / "FAIL").touch()
        run = cli(prompts, executor.url, "run", "scratch")
        text = path.read_text()
        check(
            run.returncode == 1 and "| 0 | 0 | 0 | 0:0 |" in text and "| reset |" in text,
            "a failure after graduation resets to 0:0 (status reset)",
            f"{run.stderr}\n{text}",
        )
        check(
            "Reset to 0:0: run 12" in text and "ended failed with exit code 3" in text,
            "an Evolution row says why it was reset",
            "no reset row with its reason",
        )
        audit = cli(prompts, executor.url, "audit")
        check(audit.returncode == 0, "audit agrees after the reset", audit.stdout)
    passed(args.marker)


if __name__ == "__main__":
    main()
