"""`models verify`: check every file's size and digest against what the source recorded.

Hub files: the size and LFS sha256 / git blob sha1 the hub reported at pull time (diffcli's manifest);
for models other tools downloaded, the digest is the blob's own name in the hub cache (its ETag).
URL checkpoints: the sha256 recorded when diffcli downloaded them.
Bundled models (`tiny`, `tiny-lcm`, `tiny-edit`, `tiny-flux`): the size and sha256 shipped in
diffcli/models/bundled_hashes.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from diffcli.models import registry
from diffcli.models.hashing import SHA1_RE, SHA256_RE


@dataclass
class FileCheck:
    file: str
    problem: str | None  # None: ok
    repaired: bool = False


@dataclass
class Report:
    name: str
    source: str
    path: str
    checks: list[FileCheck] = field(default_factory=list)
    note: str | None = None

    @property
    def damaged(self) -> list[FileCheck]:
        return [c for c in self.checks if c.problem and not c.repaired]

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "path": self.path,
            "note": self.note,
            "ok": not self.damaged,
            "files": [
                {"file": c.file, "ok": c.problem is None, "problem": c.problem, "repaired": c.repaired}
                for c in self.checks
            ],
        }


def _hub_manifest(snap: Path, entry: dict | None) -> dict[str, dict]:
    if entry and entry.get("files"):
        return entry["files"]
    manifest = {}
    for root, _dirs, files in os.walk(snap):
        for n in files:
            p = Path(root) / n
            blob = os.path.basename(os.path.realpath(p))
            digest = blob if (SHA256_RE.match(blob) or SHA1_RE.match(blob)) else None
            manifest[p.relative_to(snap).as_posix()] = {"size": None, "digest": digest}
    return manifest


def verify_hub(
    name: str,
    repo_id: str,
    snap: Path,
    commit: str,
    entry: dict | None,
    *,
    repair: bool = False,
    token: str | None = None,
    quiet: bool = False,
) -> Report:
    from diffcli.models import hub

    report = Report(name, "hub", str(snap))
    manifest = _hub_manifest(snap, entry)
    if not (entry and entry.get("files")):
        report.note = "not pulled by diffcli: checked against the cache's own blob names"
    for rel, exp in sorted(manifest.items()):
        path = snap / rel
        problem = hub.check_file(path, exp.get("size"), exp.get("digest"))
        check = FileCheck(rel, problem)
        report.checks.append(check)
        if problem and repair:
            check.repaired = _repair_hub_file(repo_id, commit, rel, path, exp, token=token, quiet=quiet)
    return report


def _repair_hub_file(repo_id: str, commit: str, rel: str, path: Path, exp: dict, *, token, quiet) -> bool:
    from huggingface_hub import hf_hub_download

    from diffcli.models import hub

    if path.exists() or path.is_symlink():
        hub._purge(path)
    from diffcli.models.progress import Feedback

    feedback = Feedback.of(None, quiet)
    with hub.hub_errors(f"{repo_id}/{rel}", token), feedback.bar(f"repairing {rel}", exp.get("size")) as bar:
        new = Path(
            hf_hub_download(
                repo_id,
                rel,
                revision=commit,
                cache_dir=str(hub.hub_cache_dir()),
                endpoint=hub.endpoint(),
                token=token or None,
                force_download=True,
                tqdm_class=feedback.tqdm_class(bar),
            )
        )
    problem = hub.check_file(new, exp.get("size"), exp.get("digest"))
    if problem:
        hub._purge(new)
        return False
    return True


def verify_url(
    name: str, entry: dict, *, repair: bool = False, token: str | None = None, quiet: bool = False
) -> Report:
    from diffcli.models import hub, urls

    path = Path(entry["path"])
    report = Report(name, "url", str(path))
    problem = hub.check_file(path, entry.get("size"), entry.get("sha256"))
    check = FileCheck(path.name, problem)
    report.checks.append(check)
    if problem and repair:
        from diffcli.errors import DiffcliError

        path.unlink(missing_ok=True)
        try:
            urls.pull(entry["url"], sha256=entry.get("sha256"), allow_pickle=True, token=token, quiet=quiet, force=True)
            check.repaired = hub.check_file(path, entry.get("size"), entry.get("sha256")) is None
        except DiffcliError as exc:
            report.note = f"repair failed: {exc}"
    return report


def verify_bundled(name: str, path: Path | None = None) -> Report:
    """Check a shipped model's files (at PATH, default: in the package) against the hashes shipped with it."""
    from diffcli.errors import RuntimeFailure, UsageError
    from diffcli.models import bundled, hub

    if path is None:
        from diffcli.bundled import MODEL_NAME, model_dir

        path = model_dir(name)
        if name != MODEL_NAME and not (path / "model_index.json").is_file():
            raise UsageError(f"the bundled model {name} is not installed ({path} is missing)")
    expected = bundled.recorded(name)
    if expected is None:
        raise RuntimeFailure(
            f"no hashes are recorded for the bundled model {name} ({bundled.HASHES}); reinstall diffcli"
        )
    report = Report(name, "bundled", str(path))
    for rel, exp in sorted(expected.items()):
        report.checks.append(FileCheck(rel, hub.check_file(path / rel, exp.get("size"), exp.get("sha256"))))
    present = set(bundled.model_files(path)) if Path(path).is_dir() else set()
    extra = sorted(present - set(expected))
    if extra:
        report.note = f"{len(extra)} file(s) not shipped: {', '.join(extra[:3])}"
    return report


def verify(
    name: str | None = None, *, repair: bool = False, token: str | None = None, quiet: bool = False
) -> list[Report]:
    from diffcli.errors import UsageError
    from diffcli.models import hub, inventory, names, url_store

    reports: list[Report] = []
    if name is None:
        for item in inventory.items():
            if item.source == "hub" and item.status in ("complete", "adopted"):
                e = registry.get(item.key) if item.key else None
                repo_id = (e or {}).get("repo_id") or item.path.parent.parent.name[len("models--") :].replace(
                    "--", "/", 1
                )
                reports.append(
                    verify_hub(item.name, repo_id, item.path, item.revision, e, repair=repair, token=token, quiet=quiet)
                )
            elif item.source == "url" and item.key:
                e = registry.get(item.key)
                if e and e.get("sha256"):
                    reports.append(verify_url(item.name, e, repair=repair, token=token, quiet=quiet))
        return reports
    src = names.parse(name)
    if src.kind == "bundled":
        return [verify_bundled(src.name)]
    if src.kind in ("dir", "file"):
        raise UsageError(
            f"{name}: nothing recorded to verify against (only downloaded and bundled models can be verified)"
        )
    if src.kind == "url":
        e = registry.get(url_store.registry_key(src.url))
        if not e or not e.get("sha256"):
            raise UsageError(f"'{names.redact_url(src.url)}' is not downloaded")
        return [verify_url(names.redact_url(src.url), e, repair=repair, token=token, quiet=quiet)]
    hub.check_cache()
    key = hub.registry_key(src.repo_id, src.revision)
    e = registry.get(key)
    if e and e.get("status") == "complete":
        snap = hub.repo_folder(src.repo_id) / "snapshots" / e["commit"]
        return [verify_hub(name, src.repo_id, snap, e["commit"], e, repair=repair, token=token, quiet=quiet)]
    commit = hub.read_ref(src.repo_id, src.revision)
    snap = hub.repo_folder(src.repo_id) / "snapshots" / (commit or "-")
    if not commit or not snap.is_dir():
        raise UsageError(f"'{name}' is not downloaded; run `diffcli models pull {name}`")
    return [verify_hub(name, src.repo_id, snap, commit, None, repair=repair, token=token, quiet=quiet)]
