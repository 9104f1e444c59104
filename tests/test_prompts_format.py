"""The prompt file format and the ledger: pure, no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.prompts import document, ledger
from service.prompts.audit import compare_tables, prompt_files
from service.prompts.document import PromptFormatError
from service.prompts.ledger import Record

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "prompts"


def record(id_: int, passed: bool, version: int = 1, reasons: tuple[str, ...] = ()) -> Record:
    return Record(
        id=id_,
        prompt="X",
        version=version,
        execution_id=f"e{id_}",
        marker=f"m{id_}",
        verdict="pass" if passed else "fail",
        reasons=reasons if not passed else (),
        transcript_sha256="0" * 64,
        transcript_bytes=0,
        created_at=1_790_000_000.0 + id_ * 60,
    )


def test_shipped_prompts_parse() -> None:
    names = set()
    for path in prompt_files(PROMPTS):
        doc = document.load(path)
        names.add(doc.header.name)
        assert len(doc.recovery_tests) >= 3
        assert doc.header.kind == "agent" or any("{marker}" in w for w in doc.header.command)
    assert {"T01", "T02", "T03", "T04", "T05", "T06", "T07", "C01"} <= names
    template = (PROMPTS / "TEMPLATE.md").read_text()
    document.parse(template.replace("PROMPT_NAME", "demo"), Path("demo.md"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("## Recovery Tests", "## Recovery"), "missing section"),
        (lambda t: t.replace("print('{marker}')", "print('x')"), "must pass {marker}"),
        (lambda t: t.replace("version = 1", 'version = "one"'), "version must be"),
        (lambda t: t.replace("timeout_s = 60", "timeout_s = -1"), "timeout_s must be"),
        (lambda t: t.replace('expect = ["checked: ok"]', 'expect = ["("]'), "is invalid"),
        (lambda t: t.replace("3. The run times out", "The run times out"), "at least 3"),
        (lambda t: t.replace("| 0 | 0 | 0 | 0:0 |", "| zero | 0 | 0 | 0:0 |"), "integer"),
        (lambda t: t.replace("| active |", "| champion |"), "Status must be"),
        (lambda t: t.replace("{python}", "{pyton}"), "unknown placeholder"),
        (lambda t: t.replace("| Success |", "| Wins |"), "columns"),
    ],
)
def test_bad_prompt_files_are_refused_with_a_reason(edit: object, message: str) -> None:
    text = (PROMPTS / "TEMPLATE.md").read_text().replace("PROMPT_NAME", "demo")
    with pytest.raises(PromptFormatError, match=message.replace("{", r"\{").replace("}", r"\}")):
        document.parse(edit(text), Path("demo.md"))  # type: ignore[operator]


def test_render_replaces_only_the_tables() -> None:
    text = (PROMPTS / "TEMPLATE.md").read_text().replace("PROMPT_NAME", "demo")
    doc = document.parse(text, Path("demo.md"))
    folded = ledger.fold([record(1, True), record(2, False, reasons=("x | y",))])
    rows = ledger.history(doc.history, folded, 1, "2026-01-01")
    out = document.render(doc, folded.metrics(), rows)
    again = document.parse(out, Path("demo.md"))
    assert again.metrics.success == 1 and again.metrics.failure == 1
    assert again.metrics.ratio == "1.0:1"
    assert again.history[0].result == "1 pass, 1 fail"
    assert out.split("## Gamification Metrics")[0] == text.split("## Gamification Metrics")[0]
    assert out.split("## Recovery Tests")[1] == text.split("## Recovery Tests")[1]
    assert compare_tables(again, folded) == []


def test_graduation_needs_ten_successes_and_ten_to_one() -> None:
    nine = ledger.fold([record(i, True) for i in range(1, 10)])
    assert nine.status == "active" and not nine.events
    ten = ledger.fold([record(i, True) for i in range(1, 11)])
    assert ten.status == "graduated" and ten.metrics().ratio == "10:0"
    assert ten.events[0].change.startswith("Graduated at run 10")
    # 10 successes and 1 failure is exactly 10:1: graduates.
    mixed = ledger.fold(
        [record(1, False, reasons=("boom",))] + [record(i, True) for i in range(2, 12)]
    )
    assert mixed.status == "graduated" and mixed.metrics().ratio == "10.0:1"
    # 2 failures: 19 successes are not enough, the 20th graduates.
    two = [record(1, False), record(2, False)] + [record(i, True) for i in range(3, 22)]
    assert ledger.fold(two).status == "active"
    assert ledger.fold([*two, record(22, True)]).status == "graduated"


def test_failure_after_graduation_resets_to_zero_with_a_reason() -> None:
    runs = [record(i, True) for i in range(1, 11)]
    runs.append(record(11, False, reasons=("marker missing from the stored transcript",)))
    folded = ledger.fold(runs)
    assert (folded.success, folded.failure, folded.status) == (0, 0, "reset")
    assert folded.counted == []
    reset = folded.events[-1]
    assert reset.change.startswith("Reset to 0:0: run 11")
    assert "marker missing" in reset.change
    assert reset.result == "reset after 10:0"
    # It can graduate again, with a second Graduated row.
    again = ledger.fold([*runs, *(record(i, True) for i in range(12, 22))])
    assert again.status == "graduated"
    assert [e.change.split(":")[0].split(" at")[0] for e in again.events] == [
        "Graduated",
        "Reset to 0",
        "Graduated",
    ]


def test_fold_is_by_record_id_not_arrival_order() -> None:
    runs = [record(i, True) for i in range(1, 11)] + [record(11, False)]
    assert ledger.fold(reversed(runs)).metrics() == ledger.fold(runs).metrics()
