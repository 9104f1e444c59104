"""T06: the documentation. The docs the project promises exist, and every
Markdown file of the repository passes markdownlint-cli2 with the committed
configuration (.markdownlint-cli2.jsonc), as `make lint` runs it."""

from __future__ import annotations

import subprocess

from common import REPO, arguments, check, passed

REQUIRED = ["README.md", "docs/configuration.md", "docs/prompts.md"]
PROMISED = [
    "docs/protocol.md",
    "docs/observability.md",
    "docs/security.md",
    "docs/deployment.md",
    "docs/stress.md",
    "docs/performance.md",
]


def main() -> None:
    args = arguments(__doc__ or "")
    for name in REQUIRED:
        check((REPO / name).is_file(), f"{name} exists", f"{name} is missing")
    present = [name for name in PROMISED if (REPO / name).is_file()]
    missing = sorted(set(PROMISED) - set(present))
    check(
        not missing,
        f"the promised docs exist: {', '.join(present)}",
        f"promised docs missing: {', '.join(missing)}",
    )
    lint = subprocess.run(
        [
            str(REPO / "node_modules" / ".bin" / "markdownlint-cli2"),
            "**/*.md",
            "#node_modules",
            "#.venv",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = [
        line
        for line in lint.stderr.splitlines() + lint.stdout.splitlines()
        if line.startswith(("Summary", "Linting"))
    ]
    print("\n".join(summary))
    problems = [line for line in (lint.stdout + lint.stderr).splitlines() if ".md:" in line]
    check(
        lint.returncode == 0,
        "markdownlint-cli2: 0 issues in every Markdown file",
        f"markdownlint found {len(problems)} issues:\n" + "\n".join(problems[:20]),
    )
    passed(args.marker)


if __name__ == "__main__":
    main()
