"""What diffcli knows about on this machine: list, info and removal plans."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from diffcli.errors import UsageError
from diffcli.models import registry


def du(path: Path) -> int:
    """Bytes on disk under `path`, counting each blob behind snapshot symlinks once."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    seen: set[str] = set()
    total = 0
    for root, _dirs, files in os.walk(path):
        for n in files:
            real = os.path.realpath(os.path.join(root, n))
            if real in seen or not os.path.isfile(real):
                continue
            seen.add(real)
            total += os.path.getsize(real)
    return total


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_time(ts: float | None) -> str:
    if not ts:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def alias_downloaded(name: str) -> bool:
    """Whether alias NAME's repo is complete in the hub cache (no network, no torch)."""
    from diffcli.errors import DiffcliError
    from diffcli.models import hub
    from diffcli.models.aliases import ALIASES

    try:
        return hub.find_local(ALIASES[name].repo_id, None, allow_pickle=True, trust_remote_code=True) is not None
    except (DiffcliError, OSError):
        return False


def _family_of_dir(path: Path) -> str:
    from diffcli.models.layout import read_layout
    from diffcli.models.lora import is_lora_dir

    if is_lora_dir(path) and not (path / "model_index.json").is_file():
        return "lora"
    from diffcli.models.controlnets import is_controlnet_dir

    if is_controlnet_dir(path) and not (path / "model_index.json").is_file():
        return "controlnet"
    try:
        layout = read_layout(path)
    except Exception:  # noqa: BLE001
        return "unknown"
    if layout.is_upscaler:
        return "upscaler"
    if layout.is_inpaint:
        return f"{layout.family}-inpaint"
    if layout.is_lcm:
        return f"{layout.family}-lcm"
    return layout.family


def _family_of_file(path: Path) -> str:
    from diffcli.models.checkpoint_info import detect_family
    from diffcli.models.controlnets import is_controlnet_file

    try:
        if is_controlnet_file(path):
            return "controlnet"
        return detect_family(path)
    except UsageError:
        return "invalid"


def needs_pickle(path: Path, files: list[str] | None = None) -> bool:
    """True when PATH loads only with --allow-pickle: a pickle checkpoint, or a diffusers directory (or a
    recorded file list) with pickle weights where a component has no safetensors."""
    from diffcli.models.safety import is_pickle

    path = Path(path)
    if files:
        return any(is_pickle(f) for f in files)
    if path.is_file() or not path.exists():
        return is_pickle(path)
    if not (path / "model_index.json").is_file():
        return False
    from diffcli.errors import DiffcliError
    from diffcli.models.hub import snapshot_missing

    try:
        if not snapshot_missing(path, allow_pickle=False, trust_remote_code=True):
            return False
        return not snapshot_missing(path, allow_pickle=True, trust_remote_code=True)
    except DiffcliError:
        return False


def _status(status: str, path: Path, files: list[str] | None = None) -> str:
    """`pickle` instead of `complete`/`adopted` for a model that loads only with --allow-pickle."""
    return "pickle" if status in ("complete", "adopted") and needs_pickle(path, files) else status


@dataclass
class Item:
    name: str
    source: str  # bundled | hub | url | file | local
    path: Path
    family: str
    size: int | None
    last_used: float | None = None
    revision: str | None = None
    status: str = "complete"  # complete | partial | adopted | missing | pickle (loads only with --allow-pickle)
    key: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "path": str(self.path),
            "family": self.family,
            "size": self.size,
            "last_used": self.last_used,
            "revision": self.revision,
            "status": self.status,
        }


def _bundled_item(entries: dict, name: str) -> Item | None:
    """The shipped model NAME; None for a shipped model this install lacks (the main one is always listed)."""
    from diffcli.bundled import MODEL_NAME, family, model_dir

    path = model_dir(name)
    ok = (path / "model_index.json").is_file()
    if not ok and name != MODEL_NAME:
        return None
    return Item(
        name,
        "bundled",
        path,
        family(name) if ok else "unknown",
        du(path) if path.exists() else 0,
        (entries.get(f"bundled:{name}") or {}).get("last_used"),
        status="complete" if ok else "missing",
        key=f"bundled:{name}",
    )


def hub_items(entries: dict) -> list[Item]:
    from diffcli.models import hub

    cache = hub.hub_cache_dir()
    present = hub.check_cache()
    items: list[Item] = []
    seen: set[tuple[str, str]] = set()
    for key, e in entries.items():
        if not key.startswith("hub:") or not e.get("commit"):
            continue
        repo_id, commit = e["repo_id"], e["commit"]
        snap = hub.repo_folder(repo_id) / "snapshots" / commit
        rev = e.get("revision") or "main"
        name = e.get("alias") or repo_id
        if rev != "main":
            name = f"{name}@{rev}"
        status = e.get("status", "complete") if snap.is_dir() else "missing"
        if status == "missing":
            continue
        seen.add((repo_id, commit))
        status = _status(status, snap, list(e.get("files") or {}))
        items.append(Item(name, "hub", snap, _family_of_dir(snap), du(snap), e.get("last_used"), commit, status, key))
    if present:
        try:
            repo_dirs = sorted(cache.glob("models--*"))
        except OSError as exc:
            raise hub.cache_error(exc) from None
        for repo_dir in repo_dirs:
            repo_id = repo_dir.name[len("models--") :].replace("--", "/", 1)
            refs = {}
            for ref in (repo_dir / "refs").glob("*") if (repo_dir / "refs").is_dir() else []:
                try:
                    refs[ref.read_text().strip()] = ref.name
                except OSError:
                    pass
            for snap in sorted((repo_dir / "snapshots").glob("*")) if (repo_dir / "snapshots").is_dir() else []:
                if (repo_id, snap.name) in seen or not (
                    (snap / "model_index.json").exists() or _family_of_dir(snap) == "controlnet"
                ):
                    continue
                ref = refs.get(snap.name)
                name = repo_id if ref == "main" else f"{repo_id}@{ref or snap.name}"
                items.append(
                    Item(
                        name,
                        "hub",
                        snap,
                        _family_of_dir(snap),
                        du(snap),
                        None,
                        snap.name,
                        _status("adopted", snap),
                        hub.registry_key(repo_id, ref),
                    )
                )
    return items


def items() -> list[Item]:
    entries = registry.entries()
    out: list[Item] = []
    from diffcli.bundled import MODEL_NAMES

    out += [item for item in (_bundled_item(entries, n) for n in MODEL_NAMES) if item]
    from diffcli.models.controlnets import BUNDLED_CONTROLNETS, bundled_dir

    out += [
        Item(
            n, "bundled", bundled_dir(n), "controlnet", du(bundled_dir(n)), None, status="complete", key=f"bundled:{n}"
        )
        for n in BUNDLED_CONTROLNETS
        if _family_of_dir(bundled_dir(n)) == "controlnet"
    ]
    out += hub_items(entries)
    for key, e in sorted(entries.items()):
        src = e.get("source")
        if key.startswith("url:"):
            path = Path(e.get("path", ""))
            status = (
                e.get("status", "complete")
                if path.exists()
                else ("partial" if e.get("status") == "partial" else "missing")
            )
            status = _status(status, path)
            out.append(
                Item(
                    e.get("url", key[4:]),
                    "url",
                    path,
                    _family_of_file(path) if path.exists() else "-",
                    path.stat().st_size if path.exists() else None,
                    e.get("last_used"),
                    None,
                    status,
                    key,
                )
            )
        elif key.startswith("file:") or key.startswith("local:"):
            path = Path(e.get("path", key.split(":", 1)[1]))
            if not path.exists():
                continue
            fam = _family_of_file(path) if path.is_file() else _family_of_dir(path)
            out.append(
                Item(
                    str(path),
                    "file" if src == "file" else "local",
                    path,
                    fam,
                    du(path),
                    e.get("last_used"),
                    status=_status("complete", path),
                    key=key,
                )
            )
    return out


def _check_local_model(name: str, path: Path) -> None:
    """Refuse a local PATH that is no model as --model would (a checkpoint file, a diffusers folder, a LoRA)."""
    from diffcli.models import lora
    from diffcli.models.names import CHECKPOINT_EXT

    if path.is_file() and not path.name.lower().endswith(CHECKPOINT_EXT):
        raise UsageError(f"{name}: not a model (expected a .safetensors checkpoint or a diffusers directory)")
    if path.is_dir() and not (path / "model_index.json").is_file() and not lora.is_lora_dir(path):
        raise UsageError(f"{name}: directory is not a diffusers model (no model_index.json)")


def find(name: str) -> Item:
    """The inventory item for NAME (alias, repo id[@rev], URL, path or 'tiny')."""
    from diffcli.models import hub, names, url_store, urls

    src = names.parse(name)
    if src.kind == "bundled":
        item = _bundled_item(registry.entries(), src.name)
        if item is None:
            raise UsageError(f"the bundled model {src.name} is not installed")
        return item
    if src.kind in ("dir", "file"):
        path = src.path
        _check_local_model(name, path)
        fam = _family_of_file(path) if path.is_file() else _family_of_dir(path)
        e = registry.get(f"{src.kind if src.kind == 'file' else 'local'}:{path}") or {}
        return Item(
            str(path),
            "file" if src.kind == "file" else "local",
            path,
            fam,
            du(path),
            e.get("last_used"),
            status=_status("complete", path),
        )
    if src.kind == "url":
        found = urls.find_local(src.url)
        if found is None:
            raise UsageError(f"'{names.redact_url(src.url)}' is not downloaded; run `diffcli models pull` first")
        path, e = found
        return Item(
            e.get("url"),
            "url",
            path,
            _family_of_file(path),
            path.stat().st_size,
            e.get("last_used"),
            status=_status("complete", path),
            key=url_store.registry_key(src.url),
            extra=e,
        )
    repo_id = src.repo_id
    hub.check_cache()
    found = hub.find_local(repo_id, src.revision, allow_pickle=True, trust_remote_code=True, name=name)
    if found is None:
        raise UsageError(f"'{name}' is not downloaded; run `diffcli models pull {name}`")
    snap, commit, e = found
    item = Item(
        name,
        "hub",
        snap,
        _family_of_dir(snap),
        du(snap),
        (e or registry.get(hub.registry_key(repo_id, src.revision)) or {}).get("last_used"),
        commit,
        _status("complete" if e else "adopted", snap, list((e or {}).get("files") or {})),
        hub.registry_key(repo_id, src.revision),
        extra=e or {},
    )
    item.extra["repo_id"] = repo_id
    return item


def details(name: str) -> dict:
    """`models info`: family, components, dtypes, size, files, location, recommended settings."""
    from diffcli.models.aliases import ALIASES, alias_for_repo
    from diffcli.models.checkpoint_info import dtypes, gguf_types

    item = find(name)
    out = item.to_json()
    files = []
    all_dtypes: set[str] = set()
    root = item.path
    paths_ = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for p in paths_:
        rel = p.name if root.is_file() else p.relative_to(root).as_posix()
        entry = {"file": rel, "size": p.stat().st_size}
        if p.suffix in (".safetensors", ".gguf"):
            try:
                entry["dtypes"] = dtypes(p) if p.suffix == ".safetensors" else gguf_types(p)
                all_dtypes.update(entry["dtypes"])
            except (UsageError, ImportError):  # ImportError: a .gguf without the gguf package
                entry["dtypes"] = ["invalid" if p.suffix == ".safetensors" else "unknown"]
        files.append(entry)
    out["files"] = files
    out["dtypes"] = sorted(all_dtypes)
    components = {}
    if root.is_dir() and (root / "model_index.json").is_file():
        index = json.loads((root / "model_index.json").read_text())
        out["pipeline"] = index.get("_class_name")
        for k, v in index.items():
            if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[0]:
                components[k] = f"{v[0]}.{v[1]}"
    out["components"] = components
    alias = alias_for_repo(item.extra.get("repo_id", "")) if item.source == "hub" else None
    if name in ALIASES:
        alias = name
    if alias:
        out["recommended"] = dict(ALIASES[alias].defaults)
    elif root.is_dir() and (root / "model_index.json").is_file():
        from diffcli.models.layout import read_layout

        try:
            out["recommended"] = read_layout(root).recommended()
        except UsageError:
            out["recommended"] = {}
    else:
        from diffcli import families

        family = families.get(item.family)
        out["recommended"] = dict(family.defaults) if family is not None else {}
    # settings are plain values; anything nested in a model's diffcli.json (e.g. `distilled_from`) is
    # not a setting: it goes to `extra`
    rec = out["recommended"]
    out["recommended"] = {k: v for k, v in rec.items() if not isinstance(v, (dict, list, tuple))}
    out["extra"] = {k: v for k, v in rec.items() if k not in out["recommended"]}
    return out


@dataclass
class RemovalPlan:
    name: str
    paths: list[Path]
    size: int
    execute: object  # callable


def _no_such_revision(name: str, revision: str, there: list[str]) -> UsageError:
    have = f" (downloaded: {', '.join(there)})" if there else ""
    return UsageError(f"'{name}': revision '{revision}' is not downloaded{have}; nothing was removed")


def plan_removal(name: str) -> RemovalPlan:
    from diffcli.models import hub, names, url_store

    src = names.parse(name)
    if src.kind == "bundled":
        raise UsageError(f"the bundled model '{src.name}' ships with diffcli and cannot be removed")
    if src.kind in ("dir", "file"):
        raise UsageError(f"{src.path}: diffcli only removes models it downloaded; delete your own files yourself")
    if src.kind == "url":
        key = url_store.registry_key(src.url)
        e = registry.get(key)
        if not e:
            raise UsageError(f"'{names.redact_url(src.url)}' is not downloaded")
        folder = Path(e["path"]).parent
        files = sorted(p for p in folder.glob("*")) if folder.is_dir() else []

        def run_url() -> None:
            shutil.rmtree(folder, ignore_errors=True)
            registry.remove(key)

        return RemovalPlan(name, files, sum(p.stat().st_size for p in files if p.is_file()), run_url)
    repo_id = src.repo_id
    hub.check_cache()
    records = {k: e for k, e in registry.entries().items() if k.startswith("hub:") and e.get("repo_id") == repo_id}
    if not hub.repo_folder(repo_id).is_dir():
        if not records:
            raise UsageError(f"'{name}' is not downloaded")
        keys = [k for k in records if not src.revision or k == hub.registry_key(repo_id, src.revision)]
        if not keys:
            raise _no_such_revision(name, src.revision, [])
        return RemovalPlan(name, [], 0, lambda: [registry.remove(k) for k in keys])  # records of deleted files

    from huggingface_hub import scan_cache_dir

    cache = hub.hub_cache_dir()
    try:
        info = scan_cache_dir(cache)
    except OSError as exc:
        raise hub.cache_error(exc) from None
    repo = next((r for r in info.repos if r.repo_id == repo_id and r.repo_type == "model"), None)
    present = {rev.commit_hash for rev in repo.revisions} if repo else set()
    if src.revision:
        commit = hub.read_ref(repo_id, src.revision)
        commits = [commit] if commit in present else []
        own_key = hub.registry_key(repo_id, src.revision)
        if not commits:
            if own_key not in records:
                there = sorted(
                    {ref for rev in (repo.revisions if repo else []) for ref in rev.refs}
                    | {(e.get("revision") or "main") for e in records.values()}
                )
                raise _no_such_revision(name, src.revision, there)
            keys = [own_key]  # only the record (e.g. of an interrupted pull of that revision)
        else:
            keys = [k for k, e in records.items() if e.get("commit") in commits or k == own_key]
    else:
        commits = sorted(present)
        keys = list(records)
    strategy = info.delete_revisions(*commits) if commits else None
    paths_ = []
    if strategy is not None:
        paths_ = sorted({*strategy.repos, *strategy.snapshots, *strategy.refs, *strategy.blobs})
    elif not src.revision:
        paths_ = [hub.repo_folder(repo_id)]  # nothing complete: leftovers of an interrupted pull

    def run_hub() -> None:
        if strategy is not None:
            strategy.execute()
        elif not src.revision:
            shutil.rmtree(hub.repo_folder(repo_id), ignore_errors=True)
        for k in keys:
            registry.remove(k)

    size = strategy.expected_freed_size if strategy is not None else sum(du(p) for p in paths_)
    return RemovalPlan(name, paths_, size, run_hub)
