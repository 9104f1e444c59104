"""T04: the CI scripts. Every ci/ script is strict bash that parses; the Makefile,
.ci/run and the GitHub workflow call those scripts unchanged; every workflow job
has a timeout and the test job needs lint (fail fast); install is idempotent and
the fast static check (ruff) passes."""

from __future__ import annotations

import re
import subprocess

import yaml
from common import REPO, arguments, check, passed


def run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def main() -> None:
    args = arguments(__doc__ or "")
    scripts = sorted(p for p in (REPO / "ci").iterdir() if p.is_file() and not p.suffix)
    check(
        bool(scripts),
        f"{len(scripts)} scripts in ci/: {', '.join(p.name for p in scripts)}",
        "ci/ has no scripts",
    )
    for script in scripts:
        text = script.read_text()
        strict = text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
        syntax = run(["bash", "-n", str(script)])
        check(
            strict and syntax.returncode == 0 and script.stat().st_mode & 0o111 != 0,
            f"ci/{script.name}: executable, strict bash, parses",
            f"ci/{script.name}: strict={strict} syntax={syntax.stderr.strip()}",
        )
    makefile = (REPO / "Makefile").read_text()

    def make_calls_ci(target: str) -> bool:
        body = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
        return body is not None and "ci/" in body.group(1)

    for target in ("install", "run", "test", "lint"):
        check(
            make_calls_ci(target),
            f"make {target} calls ci/ scripts",
            f"make {target} does not call a ci/ script",
        )
    check(
        "make test" in (REPO / ".ci" / "run").read_text(),
        ".ci/run runs make test",
        ".ci/run does not run make test",
    )
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())
    jobs = workflow.get("jobs", {})
    for name, job in jobs.items():
        check(
            "timeout-minutes" in job,
            f"workflow job {name} has timeout-minutes",
            f"workflow job {name} has no timeout",
        )
        commands = [step["run"] for step in job.get("steps", []) if "run" in step]
        check(
            all(
                "ci/" in command
                or (
                    command.startswith("make ")
                    and all(make_calls_ci(t) for t in command.split()[1:])
                )
                for command in commands
            ),
            f"workflow job {name} runs only ci/ scripts ({len(commands)} steps)",
            f"workflow job {name} runs something else: {commands}",
        )
    needs = jobs.get("test", {}).get("needs", [])
    check(
        "lint" in (needs if isinstance(needs, list) else [needs]),
        "the test job needs lint",
        "the test job does not wait for lint",
    )
    install = run(["bash", "ci/install", "--quiet"], timeout=300)
    check(
        install.returncode == 0,
        "ci/install --quiet is idempotent (exit 0)",
        f"ci/install failed: {install.stdout[-500:]} {install.stderr[-500:]}",
    )
    ruff = run([str(REPO / ".venv" / "bin" / "ruff"), "check", "--quiet", "."])
    check(ruff.returncode == 0, "ruff check . is clean", f"ruff: {ruff.stdout[-800:]}")
    passed(args.marker)


if __name__ == "__main__":
    main()
