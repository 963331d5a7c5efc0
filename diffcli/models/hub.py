"""Hugging Face Hub models in the standard huggingface_hub cache (HF_HOME / HF_HUB_CACHE).

Downloads go through `hf_hub_download` (locking, temp files, resume-on-cut are huggingface_hub's);
diffcli chooses the files, checks every new file against the hub's recorded size and digest (LFS
sha256, or git blob sha1 for small files) and only then records the model as complete.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from diffcli.errors import RuntimeFailure, UsageError
from diffcli.models import registry
from diffcli.models.hashing import matches
from diffcli.models.names import COMMIT_RE, validate_repo_file
from diffcli.models.safety import check_model_index, scrub
from diffcli.models.selection import select_files


def hub_cache_dir() -> Path:
    """huggingface_hub's cache, read from the environment now (not at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


def repo_folder(repo_id: str) -> Path:
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def registry_key(repo_id: str, revision: str | None) -> str:
    return f"hub:{repo_id}@{revision or 'main'}"


def pull_hint(name: str) -> str:
    return f"run `diffcli models pull {name}` while online"


# ---------------------------------------------------------------- errors


def check_cache() -> bool:
    """False when the hub cache does not exist yet (nothing downloaded); a clear error when it is unusable."""
    cache = hub_cache_dir()
    try:
        with os.scandir(cache) as it:
            next(it, None)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise cache_error(exc, cache) from None
    return True


def cache_error(exc: OSError, path: Path | None = None) -> RuntimeFailure:
    """One line for an unreadable or unusable hub cache (not a directory, no permission, ...)."""
    cache = hub_cache_dir()
    why = (exc.strerror or type(exc).__name__).lower()
    if isinstance(exc, NotADirectoryError) and (path is None or Path(path) == cache):
        why = "not a directory"
    where = f" ({path})" if path is not None and Path(path) != cache else ""
    return RuntimeFailure(
        f"cannot use the Hugging Face cache {cache}: {why}{where}; point HF_HUB_CACHE (or HF_HOME) "
        "at a readable directory, or fix its permissions"
    )


def unreachable_hint(name: str | None) -> str:
    ep = endpoint() or "https://huggingface.co"
    again = f", or run `diffcli models pull {name}` again once the hub is reachable" if name else ""
    return (
        f"check the network connection and HF_ENDPOINT (now {ep}); models already downloaded work with "
        f"--offline (or HF_HUB_OFFLINE=1){again}"
    )


def token_hint(name: str | None) -> str:
    return f"set HF_TOKEN, or run `diffcli models pull {name} --token TOKEN`" if name else "set HF_TOKEN"


@contextmanager
def hub_errors(what: str, token: str | None, name: str | None = None):
    """Turn huggingface_hub/httpx errors into one-line diffcli errors without secrets or tracebacks.

    NAME: the model as the user wrote it, for the `diffcli models pull NAME` hints."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    error: Exception | None = None
    try:
        yield
    except (UsageError, RuntimeFailure):
        raise
    except GatedRepoError:
        error = UsageError(f"{what} is gated: accept its terms on the hub, then {token_hint(name)}")
    except RepositoryNotFoundError:
        error = UsageError(f"{what} was not found on the hub (if it is private or gated: {token_hint(name)})")
    except RevisionNotFoundError:
        error = UsageError(f"{what}: revision not found on the hub")
    except RemoteEntryNotFoundError as exc:
        error = RuntimeFailure(f"{what}: a file listed by the hub is missing ({_first_line(exc)})")
    except OfflineModeIsEnabled:
        error = UsageError(f"{what} is not downloaded and offline mode is on; {pull_hint(name or what)}")
    except LocalEntryNotFoundError:
        error = RuntimeFailure(
            f"{what}: cannot reach the hub and the files are not downloaded; {unreachable_hint(name)}"
        )
    except HfHubHTTPError as exc:
        error = RuntimeFailure(f"{what}: hub request failed ({_first_line(exc)})")
    except OSError as exc:  # consistency (size) checks, disk full, connection errors
        if exc.filename and str(hub_cache_dir()) in str(exc.filename):
            error = cache_error(exc, Path(exc.filename))
        else:
            error = RuntimeFailure(f"{what}: download failed ({_first_line(exc)})")
    except Exception as exc:  # httpx errors are not OSErrors
        if type(exc).__module__.split(".")[0] not in ("httpx2", "httpx", "httpcore"):
            raise
        error = RuntimeFailure(
            f"{what}: cannot reach the hub ({type(exc).__name__}: {_first_line(exc)}); {unreachable_hint(name)}"
        )
    if error is not None:
        error = type(error)(scrub(str(error), token))
        raise error from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# ---------------------------------------------------------------- local lookups


def read_ref(repo_id: str, revision: str | None) -> str | None:
    revision = revision or "main"
    if COMMIT_RE.match(revision):
        return revision
    ref = repo_folder(repo_id) / "refs" / revision
    try:
        commit = ref.read_text().strip()
    except OSError:
        return None
    return commit if COMMIT_RE.match(commit) else None


def write_ref(repo_id: str, revision: str, commit: str) -> None:
    """Point refs/<revision> at the commit (atomically), as huggingface_hub does, once the pull is complete."""
    if COMMIT_RE.match(revision):
        return
    ref = repo_folder(repo_id) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
    tmp.write_text(commit)
    os.replace(tmp, ref)


def snapshot_files(snapshot: Path) -> list[str]:
    out = []
    for root, _dirs, names in os.walk(snapshot):
        for n in names:
            full = Path(root) / n
            if full.exists():  # a dangling link is not a file
                out.append(full.relative_to(snapshot).as_posix())
    return sorted(out)


# The classes of a pipeline's components that are files of settings and vocabularies, no weights: tokenizers,
# processors (Qwen-Image-Edit's `processor`: Qwen2VLProcessor; FLUX.2 [dev]'s `tokenizer`: PixtralProcessor),
# feature extractors and schedulers.
WEIGHTLESS_CLASSES = ("Tokenizer", "TokenizerFast", "Processor", "FeatureExtractor", "Scheduler")


def _weightless(component: str, entry) -> bool:
    """Whether model_index.json's component (ENTRY: [library, class]) holds no weights."""
    if component.startswith("tokenizer") or component.endswith("scheduler"):
        return True
    if component in ("feature_extractor", "image_processor", "processor"):
        return True
    cls = entry[1] if isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], str) else ""
    return cls.endswith(WEIGHTLESS_CLASSES)


def snapshot_missing(
    snapshot: Path,
    *,
    allow_pickle: bool,
    trust_remote_code: bool = False,
    name: str | None = None,
    pull_name: str | None = None,
) -> list[str]:
    """What a locally present snapshot lacks to load (empty list: complete).

    NAME: how errors name the model (default: the snapshot path); PULL_NAME: the name for a
    `diffcli models pull NAME --trust-remote-code` hint (hub models only)."""
    index_path = snapshot / "model_index.json"
    if not index_path.is_file():
        from diffcli.models.controlnets import controlnet_class

        if controlnet_class(snapshot) is not None:  # a ControlNet: its config and weights at the top level
            weights = [
                f for f in os.listdir(snapshot) if f.endswith(".safetensors") or (allow_pickle and f.endswith(".bin"))
            ]
            return [] if weights else ["(weights)"]
        return ["model_index.json"]
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ["model_index.json (unreadable)"]
    files = snapshot_files(snapshot)
    components = check_model_index(
        index, name or str(snapshot), repo_files=files, trust_remote_code=trust_remote_code, pull_name=pull_name
    )
    missing = []
    for comp in components:
        in_folder = [f for f in files if f.startswith(comp + "/")]
        if not in_folder:
            missing.append(comp + "/")
            continue
        if _weightless(comp, index.get(comp)):
            continue
        weights = [f for f in in_folder if f.endswith(".safetensors") or (allow_pickle and f.endswith(".bin"))]
        if not weights:
            missing.append(f"{comp}/ (weights)")
        for idx in [f for f in in_folder if f.endswith(".index.json") or ".index." in f and f.endswith(".json")]:
            try:
                shards = set(json.loads((snapshot / idx).read_text()).get("weight_map", {}).values())
            except (OSError, ValueError):
                missing.append(idx)
                continue
            missing += [f"{comp}/{s}" for s in sorted(shards) if not (snapshot / comp / s).exists()]
    return missing


def find_local(
    repo_id: str,
    revision: str | None,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    name: str | None = None,
):
    """(snapshot dir, commit, registry entry or None) when the model is complete in the cache, else None.

    NAME: the model as the user wrote it (for messages)."""
    key = registry_key(repo_id, revision)
    entry = registry.get(key)
    if entry and entry.get("status") == "complete" and entry.get("commit"):
        snap = repo_folder(repo_id) / "snapshots" / entry["commit"]
        if all((snap / f).exists() for f in entry.get("files", {})):
            if not allow_pickle and any(f.endswith(".bin") for f in entry.get("files", {})):
                from diffcli.models.safety import refuse_pickle

                raise refuse_pickle(f"{repo_id}")
            return snap, entry["commit"], entry
        return None
    commit = read_ref(repo_id, revision)
    if commit is None:
        return None
    for other in registry.entries().values():
        if other.get("repo_id") == repo_id and other.get("commit") == commit and other.get("status") == "partial":
            return None  # a diffcli pull of this commit was cut off
    snap = repo_folder(repo_id) / "snapshots" / commit
    name = name or (f"{repo_id}@{revision}" if revision else repo_id)
    if not snap.is_dir() or snapshot_missing(
        snap, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, name=name, pull_name=name
    ):
        return None
    return snap, commit, None


# ---------------------------------------------------------------- pull


def _purge(pointer: Path) -> None:
    """Remove a snapshot entry and the blob behind it (used for damaged downloads)."""
    blob = Path(os.path.realpath(pointer))
    pointer.unlink(missing_ok=True)
    if blob != pointer and hub_cache_dir().resolve() in blob.parents:
        blob.unlink(missing_ok=True)


def _clean_stale_partials(blobs: Path, age: float = 600.0) -> None:
    """Temp files left by killed downloads (huggingface_hub names them *.incomplete); recent ones may be live."""
    if not blobs.is_dir():
        return
    now = time.time()
    for tmp in blobs.glob("*.incomplete"):
        try:
            if now - tmp.stat().st_mtime > age:
                tmp.unlink()
        except OSError:
            pass


def expected_digest(sibling) -> tuple[int | None, str | None]:
    if sibling is None:
        return None, None
    if sibling.lfs is not None:
        return sibling.lfs.size, sibling.lfs.sha256
    return sibling.size, sibling.blob_id


def check_file(path: Path, size: int | None, digest: str | None) -> str | None:
    """None when `path` matches; else what is wrong."""
    if not path.exists():
        return "missing"
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"size {actual} != expected {size}"
    if digest and not matches(path, digest):
        return "hash mismatch"
    return None


def pull(
    repo_id: str,
    revision: str | None = None,
    *,
    name: str | None = None,
    variant: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    token: str | None = None,
    quiet: bool = False,
    force: bool = False,
    alias: str | None = None,
    progress=None,
) -> tuple[Path, str, dict]:
    """Fetch what the pipeline needs; return (snapshot dir, commit, registry entry).

    PROGRESS: "auto", "quiet", "json" or a callable (see diffcli.models.progress); `quiet=True` is "quiet"."""
    from huggingface_hub import HfApi

    from diffcli.models.progress import Feedback

    feedback = Feedback.of(progress, quiet)
    name = name or (f"{repo_id}@{revision}" if revision else repo_id)
    key = registry_key(repo_id, revision)
    cache = hub_cache_dir()
    ep = endpoint()
    lock = registry.file_lock(
        "hub-" + repo_id.replace("/", "--"), waiting=feedback.waiting(f"waiting for another process pulling {repo_id}…")
    )
    with lock, hub_errors(name, token, name=name):
        api = HfApi(endpoint=ep, token=token or None)
        commit, siblings, one_model = _repo_info(api, repo_id, revision, name)
        snap = cache / repo_folder(repo_id).name / "snapshots" / commit
        old = registry.get(key) or {}
        if old.get("status") == "complete" and old.get("commit") == commit and not force:
            if all((snap / f).exists() for f in old.get("files", {})) and old.get("variant") == variant:
                return snap, commit, old
        _clean_stale_partials(repo_folder(repo_id) / "blobs")
        registry.update(
            key,
            repo_id=repo_id,
            revision=revision or "main",
            commit=commit,
            status="partial",
            variant=variant,
            source="hub",
            alias=alias,
            started_at=time.time(),
        )
        fetch = _fetcher(
            repo_id, commit, snap, siblings, name=name, cache=cache, ep=ep, token=token, force=force, feedback=feedback
        )
        files = _pull_files(
            name,
            fetch,
            siblings,
            one_model,
            variant=variant,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
        )
        todo = files if force else [f for f in files if not (snap / f).exists()]
        total = sum((expected_digest(siblings.get(f))[0] or 0) for f in todo)
        with (feedback if todo else Feedback("quiet")).bar(f"pulling {name}", total or None, model=name) as bar:
            for f in files:
                if f not in ("model_index.json", "config.json" if one_model else ""):  # fetched (and checked) above
                    fetch(f, bar)
        write_ref(repo_id, revision or "main", commit)
        entry = registry.update(
            key, status="complete", files=_manifest(files, siblings), pulled_at=time.time(), allow_pickle=allow_pickle
        )
    return snap, commit, entry


def _repo_info(api, repo_id: str, revision: str | None, name: str) -> tuple[str, dict, bool]:
    """The hub's (commit, {file: sibling}, whether it is a one-model repo such as a ControlNet) for REPO_ID."""
    info = api.model_info(repo_id, revision=revision, files_metadata=True)
    commit = info.sha
    if not commit or not COMMIT_RE.match(commit):
        raise RuntimeFailure(f"{name}: the hub returned no commit for this revision")
    siblings = {s.rfilename: s for s in (info.siblings or [])}
    one_model = "model_index.json" not in siblings and "config.json" in siblings  # a ControlNet repo
    if "model_index.json" not in siblings and not one_model:
        raise UsageError(
            f"{name} is not a diffusers pipeline repo (no model_index.json); "
            "for a single checkpoint give its URL or local path"
        )
    return commit, siblings, one_model


def _fetcher(
    repo_id: str,
    commit: str,
    snap: Path,
    siblings: dict,
    *,
    name: str,
    cache: Path,
    ep: str | None,
    token: str | None,
    force: bool,
    feedback,
):
    """A `fetch(filename, bar=None) -> Path` for pull: downloads one file of the snapshot, checking a new one."""
    from huggingface_hub import hf_hub_download

    def fetch(filename: str, bar=None) -> Path:
        validate_repo_file(filename)
        pointer = snap / filename
        size, digest = expected_digest(siblings.get(filename))
        existed = pointer.exists()
        if existed and (force or (size is not None and pointer.stat().st_size != size)):
            _purge(pointer)
            existed = False
        path = Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=commit,
                cache_dir=str(cache),
                endpoint=ep,
                token=token or None,
                tqdm_class=feedback.tqdm_class(bar),
            )
        )
        if not existed:
            problem = check_file(path, size, digest)
            if problem:
                _purge(path)
                raise RuntimeFailure(f"{name}: {filename}: {problem}; the damaged download was discarded")
        return path

    return fetch


def _pull_files(
    name: str,
    fetch,
    siblings: dict,
    one_model: bool,
    *,
    variant: str | None,
    allow_pickle: bool,
    trust_remote_code: bool,
) -> list[str]:
    """The files pull takes: fetches (and checks) model_index.json, or a one-model repo's config.json, to choose."""
    if one_model:
        from diffcli.models.controlnets import controlnet_class
        from diffcli.models.selection import select_root_model_files

        if controlnet_class(fetch("config.json").parent) is None:
            raise UsageError(
                f"{name} is neither a diffusers pipeline repo (no model_index.json) nor a ControlNet "
                f"(its config.json names another class)"
            )
        return select_root_model_files(list(siblings), variant=variant, allow_pickle=allow_pickle, where=name)
    index_path = fetch("model_index.json")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except ValueError:
        raise UsageError(f"{name}: model_index.json is not valid JSON") from None
    components = check_model_index(
        index, name, repo_files=list(siblings), trust_remote_code=trust_remote_code, pull_name=name
    )
    return select_files(list(siblings), components, variant=variant, allow_pickle=allow_pickle, where=name)


def _manifest(files: list[str], siblings: dict) -> dict:
    """{file: {"size", "digest"}} as the hub records them, for the registry entry of a complete pull."""
    manifest = {}
    for f in files:
        size, digest = expected_digest(siblings.get(f))
        manifest[f] = {"size": size, "digest": digest}
    return manifest
