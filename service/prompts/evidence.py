"""Prompt evidence in the repository: ``prompts/evidence/``.

The store that judged a run may be gone when a reviewer opens a pull request,
so every recorded run is also exported here as plain files, and the tables
are a fold over these files (never over a store):

- ``<PROMPT>/runs/<NNNNNN>.json``: one record per run, numbered 1, 2, ... in
  the order they were exported (the fold's order). It holds what the server
  judged (version, execution id, marker, argv, state, exit code, verdict,
  reasons, patterns, transcript SHA-256 and size, time), the placeholder
  values the command was built with (``{repo}`` and ``{python}`` differ per
  machine) and where its transcript is kept.
- ``transcripts/<SHA-256>.txt.gz``: the transcript the store recorded,
  gzip-compressed and named after the SHA-256 of the text kept. A transcript
  over :data:`TRANSCRIPT_CAP_BYTES` keeps its head and tail with a line saying
  how much was left out; the record says so (``truncated``, ``cap_bytes``).
- ``<PROMPT>/versions/<V>.json``: the prompt's header as it was at the first
  run of version V (command, patterns, timeout...): a later run of V with a
  different header is refused, and the audit judges each version's runs
  against its own command.
- ``<PROMPT>/restart.json``: counts restarted at a version (``prompts
  restart``); earlier versions are history without counts.
- ``MANIFEST.sha256``: the SHA-256 of every other file here (``sha256sum -c``
  format). Files are only ever added to it, for the files just written, so a
  changed byte anywhere (records included) stays caught.

Writes are atomic per file (temporary file, fsync, rename) in an order where
the manifest comes last: a crash in between leaves files the manifest does
not list, which the audit names. Callers hold the prompts directory's lock.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.prompts.document import Header, PromptDocument
from service.prompts.ledger import Record, minute
from service.prompts.verdict import digest

EVIDENCE_DIR = "evidence"
MANIFEST = "MANIFEST.sha256"
TRANSCRIPTS = "transcripts"
#: The most of one transcript kept as evidence (checks print a few lines).
TRANSCRIPT_CAP_BYTES = 64 * 1024
#: Of a transcript over the cap, how much of its beginning is kept (the rest is its end,
#: where the marker and the verdict lines are).
HEAD_BYTES = 8 * 1024


class EvidenceError(Exception):
    """An evidence file cannot be read or written; the message names it."""


@dataclass(frozen=True)
class Entry:
    """One run's record in the evidence (``record.id`` is its run number)."""

    record: Record
    path: Path
    placeholders: dict[str, str]
    transcript_file: str
    kept_sha256: str
    kept_bytes: int
    truncated: bool
    store_id: int | None


def directory_of(prompts_dir: Path) -> Path:
    return prompts_dir / EVIDENCE_DIR


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def keep(transcript: str, cap_bytes: int = TRANSCRIPT_CAP_BYTES) -> tuple[str, bool]:
    """What of ``transcript`` is kept, and whether it was cut to the cap."""
    data = _encode(transcript)
    if len(data) <= cap_bytes:
        return transcript, False
    head = data[:HEAD_BYTES].decode("utf-8", "ignore")
    tail = data[-(cap_bytes - HEAD_BYTES) :].decode("utf-8", "ignore")
    left_out = len(data) - len(_encode(head)) - len(_encode(tail))
    return f"{head}\n[... {left_out} bytes not kept as evidence ...]\n{tail}", True


# --- atomic files ---------------------------------------------------------------


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: temporary file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False)
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(handle.name)
        raise


def _json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise EvidenceError(f"{path}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise EvidenceError(f"{path}: not a JSON object")
    return data


# --- the manifest -----------------------------------------------------------------


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(evidence: Path) -> dict[str, str]:
    """Relative path -> SHA-256, as the manifest lists them (empty when none)."""
    path = evidence / MANIFEST
    if not path.exists():
        return {}
    listed: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        sha, sep, name = line.partition("  ")
        if not sep or len(sha) != 64 or not name:
            raise EvidenceError(f"{path}: line {number} is not 'SHA256  PATH'")
        listed[name] = sha
    return listed


def evidence_files(evidence: Path) -> list[str]:
    """Every file under ``evidence`` (relative, sorted), the manifest excepted."""
    if not evidence.is_dir():
        return []
    names = []
    for path in evidence.rglob("*"):
        name = path.relative_to(evidence).as_posix()
        if name != MANIFEST and (path.is_symlink() or path.is_file()):
            names.append(name)
    return sorted(names)


def add_to_manifest(evidence: Path, written: Iterable[str]) -> None:
    """List the files just written (hashed now); every other line is kept as it was."""
    listed = read_manifest(evidence)
    for name in written:
        listed[name] = file_sha256(evidence / name)
    text = "".join(f"{listed[name]}  {name}\n" for name in sorted(listed))
    write_bytes_atomic(evidence / MANIFEST, text.encode())


def manifest_problems(evidence: Path) -> list[tuple[str, str]]:
    """(relative path, what is wrong) for every file the manifest does not vouch for."""
    try:
        listed = read_manifest(evidence)
    except EvidenceError as exc:
        return [(MANIFEST, str(exc))]
    present = evidence_files(evidence)
    problems = []
    for name in present:
        path = evidence / name
        if path.is_symlink():
            problems.append((name, "is a symlink, not a file"))
        elif name not in listed:
            problems.append((name, "is not in the evidence manifest"))
        elif file_sha256(path) != listed[name]:
            problems.append((name, "changed: its SHA-256 differs from the manifest's"))
    for name in sorted(set(listed) - set(present)):
        problems.append((name, "is in the manifest but missing"))
    return problems


# --- reading -----------------------------------------------------------------------


def read_transcript(evidence: Path, name: str) -> str:
    """The kept transcript text of ``transcripts/<sha>.txt.gz``."""
    try:
        data = gzip.decompress((evidence / name).read_bytes())
        return data.decode("utf-8", "surrogatepass")
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError) as exc:
        raise EvidenceError(f"{name}: cannot read: {exc}") from None


def _entry(path: Path, data: dict[str, Any]) -> Entry:
    try:
        kept = data["evidence"]
        record = Record.from_wire({**data, "id": data["run"]})
        return Entry(
            record=record,
            path=path,
            placeholders={str(k): str(v) for k, v in dict(data["placeholders"]).items()},
            transcript_file=str(kept["file"]),
            kept_sha256=str(kept["sha256"]),
            kept_bytes=int(kept["bytes"]),
            truncated=bool(kept["truncated"]),
            store_id=data.get("store_id"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EvidenceError(f"{path}: not a run record ({exc!r})") from None


def entries(evidence: Path, prompt: str) -> list[Entry]:
    """The prompt's run records, by run number. :class:`EvidenceError` when one
    cannot be read."""
    runs = evidence / prompt / "runs"
    if not runs.is_dir():
        return []
    found = [_entry(path, _read_json(path)) for path in sorted(runs.glob("*.json"))]
    return sorted(found, key=lambda entry: entry.record.id)


def prompts_with_evidence(evidence: Path) -> list[str]:
    if not evidence.is_dir():
        return []
    return sorted(p.name for p in evidence.iterdir() if p.is_dir() and p.name != TRANSCRIPTS)


def snapshot_of(header: Header, prompt_text: str) -> dict[str, Any]:
    """What a version's runs are judged against (the prompt text only for agents)."""
    snapshot: dict[str, Any] = {
        "prompt": header.name,
        "version": header.version,
        "kind": header.kind,
        "command": list(header.command),
        "expect": list(header.expect),
        "timeout_s": header.timeout_s,
        "cwd": header.cwd,
        "claude_bin": header.claude_bin,
    }
    if header.kind == "agent":
        snapshot["prompt_text"] = prompt_text
    return snapshot


def read_snapshot(evidence: Path, prompt: str, version: int) -> dict[str, Any] | None:
    path = evidence / prompt / "versions" / f"{version}.json"
    return _read_json(path) if path.exists() else None


def counts_from(evidence: Path, prompt: str) -> int:
    """The version counting starts at (1 unless ``prompts restart`` moved it)."""
    path = evidence / prompt / "restart.json"
    if not path.exists():
        return 1
    try:
        return int(_read_json(path)["counts_from_version"])
    except (KeyError, TypeError, ValueError):
        raise EvidenceError(f"{path}: no counts_from_version") from None


# --- writing -------------------------------------------------------------------------


def check_version(prompts_dir: Path, doc: PromptDocument) -> None:
    """Refuse a run of a version whose header changed since its first recorded
    run (its earlier runs were judged against another command), or of a version
    from before the counts restarted."""
    evidence = directory_of(prompts_dir)
    name, version = doc.header.name, doc.header.version
    if version < counts_from(evidence, name):
        raise EvidenceError(
            f"{name}: counts restarted at version {counts_from(evidence, name)}; "
            f"version {version} is history"
        )
    existing = read_snapshot(evidence, name, version)
    if existing is not None and existing != snapshot_of(doc.header, doc.prompt_text):
        raise EvidenceError(
            f"{name}: version {version}'s header changed since its first recorded run; "
            "bump the version"
        )


def export(
    prompts_dir: Path,
    doc: PromptDocument,
    record: Record,
    transcript: str,
    placeholders: dict[str, str],
) -> Entry:
    """Add one judged run (the store's ``record`` and the transcript the store
    holds) to the evidence; the caller holds the directory lock."""
    evidence = directory_of(prompts_dir)
    name = doc.header.name
    if digest(transcript) != record.transcript_sha256:
        raise EvidenceError(
            f"{name}: the transcript of execution {record.execution_id} does not hash to "
            "what the server judged; nothing exported"
        )
    if record.version != doc.header.version:
        raise EvidenceError(f"{name}: the file is at version {doc.header.version} now")
    check_version(prompts_dir, doc)
    written: list[str] = []
    if read_snapshot(evidence, name, record.version) is None:
        rel = f"{name}/versions/{record.version}.json"
        write_bytes_atomic(evidence / rel, _json_bytes(snapshot_of(doc.header, doc.prompt_text)))
        written.append(rel)
    kept, truncated = keep(transcript)
    kept_sha = digest(kept)
    transcript_rel = f"{TRANSCRIPTS}/{kept_sha}.txt.gz"
    if not (evidence / transcript_rel).exists():
        # mtime=0: the same text always compresses to the same bytes.
        write_bytes_atomic(evidence / transcript_rel, gzip.compress(_encode(kept), 9, mtime=0))
        written.append(transcript_rel)
    run = len(entries(evidence, name)) + 1
    data: dict[str, Any] = {
        "run": run,
        "prompt": name,
        "version": record.version,
        "execution_id": record.execution_id,
        "marker": record.marker,
        "argv": list(record.argv),
        "state": record.status,
        "exit_code": record.exit_code,
        "verdict": record.verdict,
        "reasons": list(record.reasons),
        "patterns": list(record.patterns),
        "transcript_sha256": record.transcript_sha256,
        "transcript_bytes": record.transcript_bytes,
        "evidence": {
            "file": transcript_rel,
            "sha256": kept_sha,
            "bytes": len(_encode(kept)),
            "truncated": truncated,
            "cap_bytes": TRANSCRIPT_CAP_BYTES,
        },
        "placeholders": {k: v for k, v in placeholders.items() if k != "marker"},
        "created_at": record.created_at,
        "time": minute(record.created_at),
        "store_id": record.id,
    }
    rel = f"{name}/runs/{run:06d}.json"
    if (evidence / rel).exists():
        raise EvidenceError(f"{rel} exists already: the evidence is not numbered 1..N")
    write_bytes_atomic(evidence / rel, _json_bytes(data))
    written.append(rel)
    add_to_manifest(evidence, written)
    return _entry(evidence / rel, data)


def write_restart(prompts_dir: Path, prompt: str, version: int, reason: str, before: str) -> None:
    """Record that ``prompt``'s counts start again at ``version``."""
    evidence = directory_of(prompts_dir)
    rel = f"{prompt}/restart.json"
    data = {
        "prompt": prompt,
        "counts_from_version": version,
        "reason": reason,
        "before": before,
        "at": minute(time.time()),
    }
    write_bytes_atomic(evidence / rel, _json_bytes(data))
    add_to_manifest(evidence, [rel])
