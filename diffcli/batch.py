"""`diffcli batch`: many jobs in one process, each model loaded once, resumable after any stop.

A job list is JSON lines (one object per line with the Job's fields, e.g. `{"prompt": "castle",
"steps": 20}`) or plain text (one prompt per line; `#` starts a comment). Flags give every value a
line leaves out. All lines are read and checked before any model loads.

Resuming: every finished job is appended to `diffcli-manifest.jsonl` in the output directory, keyed
by a hash of its settled settings (the Job with every default decided, and the model's fingerprint);
a job already there is skipped when its files are present as plain names in the output directory and
their images record its key (what the manifest says is checked, not trusted). A job whose line gives
no seed gets one derived from the line's content, so a rerun, a shard and a single run make the same
images. Each job's files are named after its line and key (`LLLLL-KEY-SEED-PROMPT.png`), so an image
saved just before a kill -9, before its manifest line, is recognised by the key in its metadata and kept.

Scale-out: `--shard I/N` takes every N-th job starting at I (0-based), for job arrays; under
`accelerate launch` (or torchrun) each process takes its share the same way, by its rank.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

from diffcli.errors import DiffcliError, UsageError
from diffcli.jobs import Job, validate
from diffcli.limits import MAX_SEED

MANIFEST = "diffcli-manifest.jsonl"
_FIELDS = {f.name for f in fields(Job)}


@dataclass(frozen=True)
class Line:
    """One job of the list: where it came from and what it asks."""

    number: int  # 1-based line number in the job list
    job: Job


class Lines(list):
    """The good lines of a job list; REJECTED counts the bad ones that --keep-going skipped."""

    rejected: int = 0


def rejected_share(rejected: int, shard: tuple[int, int]) -> int:
    """How many of REJECTED bad lines SHARD counts as failed: they are shared out as jobs are (the
    j-th to shard j mod N), so the shards of one list together count each bad line once."""
    index, count = shard
    return len(range(index, rejected, count))


def read_lines(source: str, base: Job, keep_going: bool, warn) -> Lines:
    """The jobs of SOURCE (a path, or - for stdin) laid over BASE; every line checked now. With
    KEEP_GOING bad lines are warned about, left out and counted (`.rejected`), else the first stops it."""
    text = _read_text(source).removeprefix("\ufeff")  # a byte-order mark (Notepad, PowerShell) is no text
    name = "<stdin>" if source == "-" else source
    # lines end at "\n" only: U+2028 and the like may stand raw inside a JSON string (jq writes them)
    raw = [(i + 1, line.strip()) for i, line in enumerate(text.split("\n"))]
    raw = [(n, line) for n, line in raw if line and not line.startswith("#")]
    if not raw:
        raise UsageError(f"{name}: no jobs in it")
    as_json = Path(source).suffix.lower() in (".jsonl", ".json") or raw[0][1].startswith("{")
    lines, errors, seen = [], [], {}
    for number, content in raw:
        try:
            job = _parse(content, as_json, base, f"{name}:{number}")
            job = _seeded(job, seen)
            validate(job)
            _check_input_files(job)
        except UsageError as exc:
            message = str(exc) if str(exc).startswith(f"{name}:") else f"{name}:{number}: {exc}"
            errors.append(message)
            continue
        lines.append(Line(number, job))
    if errors and not keep_going:
        more = f" (and {len(errors) - 1} more bad lines; --keep-going runs the rest)" if len(errors) > 1 else ""
        raise UsageError(errors[0] + more)
    for message in errors:
        warn(f"skipped {message}")
    result = Lines(lines)
    result.rejected = len(errors)
    return result


def _check_input_files(job: Job) -> None:
    """The images a line names (input, mask, references) are there and readable as images: read from
    their headers now, before any model loads, rather than when their model's jobs are planned."""
    from diffcli.images import open_image

    for path in (job.image, job.mask, *(job.references or ())):
        if path:
            with open_image(path):
                pass


def _read_text(source: str) -> str:
    try:
        if source == "-":
            return sys.stdin.read()
        return Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{source}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{source}: cannot read the job list ({getattr(exc, 'strerror', None) or exc})") from None


def _parse(content: str, as_json: bool, base: Job, where: str) -> Job:
    if not as_json:
        return replace(base, prompt=content)
    try:
        data = json.loads(content)
    except ValueError as exc:
        raise UsageError(f"{where}: not valid JSON ({exc})") from None
    if isinstance(data, dict):
        unknown = sorted(k for k in data if k not in _FIELDS)
        if unknown:
            raise UsageError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}")
    job = Job.from_dict(data, source=where)
    explicit = {k: v for k, v in data.items() if v is not None}
    merged = replace(base, **{k: getattr(job, k) for k in explicit})
    if "task" not in explicit:
        merged = replace(merged, task=base.task)
    return merged


# The Job's fields when derived seeds and resume keys were introduced: always hashed (unset ones as
# null), so lists keep their seeds and resumed runs their keys. A field added since is hashed only when
# a job sets it (and, once settled, to something other than its built-in "off" default).
HASHED_ALWAYS = (
    "task",
    "prompt",
    "negative",
    "model",
    "base",
    "quantize",
    "steps",
    "cfg",
    "cfg_cutoff",
    "shift",
    "width",
    "height",
    "seed",
    "num_images",
    "batch_size",
    "scheduler",
    "device",
    "dtype",
    "strength",
    "image",
    "mask",
    "mask_blur",
    "extend",
    "anchor",
    "fill",
    "lora",
    "prompt_syntax",
    "control",
    "control_preprocess",
)


def _content(job: Job, settled: bool = False) -> dict:
    """What hashes JOB (its derived seed; SETTLED: its resume key), the same whichever later diffcli
    reads the list: HASHED_ALWAYS, plus any newer field the job sets to something (for a settled job,
    other than settings.BUILTIN's default such as --cache none or --vae-decoder full)."""
    from diffcli.settings import BUILTIN

    return {
        k: v
        for k, v in job.to_dict().items()
        if k in HASHED_ALWAYS or (v is not None and not (settled and k in BUILTIN and BUILTIN[k] == v))
    }


def _seeded(job: Job, seen: dict) -> Job:
    """A job without a seed gets one from its content (and how often the same content came before),
    so the same list makes the same images in any order, shard or rerun."""
    if job.seed is not None:
        return job
    # where it runs and how many images share a batch do not change what is asked (as in settled_key)
    content = json.dumps(_content(replace(job, device=None, dtype=None, batch_size=None)), sort_keys=True)
    seen[content] = seen.get(content, -1) + 1
    digest = hashlib.sha256(f"{content}\0{seen[content]}".encode()).digest()
    return replace(job, seed=int.from_bytes(digest[:4], "big") % (MAX_SEED + 1))


def shard_of(spec: str | None) -> tuple[int, int]:
    """(index, count) from --shard I/N, or from the launcher's rank; (0, 1) when neither."""
    if spec is not None:  # (an empty one too: `--shard "$ID"` with ID unset must not run the whole list)
        try:
            index, count = (int(part) for part in spec.split("/"))
        except ValueError:
            raise UsageError(f"invalid --shard '{spec}'; use I/N, e.g. 0/4") from None
        if not (count >= 1 and 0 <= index < count):
            raise UsageError(f"invalid --shard '{spec}': I must be in 0..N-1")
        return index, count
    rank, world = env_rank()
    return (rank, world) if world > 1 else (0, 1)


def env_rank() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) from the environment (a launcher's, or set by hand), checked: (0, 1) when unset."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        rank = int(os.environ.get("RANK", "0") or 0)
    except ValueError:
        raise UsageError(
            f"WORLD_SIZE '{os.environ.get('WORLD_SIZE')}' and RANK '{os.environ.get('RANK')}' in the environment "
            "must be numbers"
        ) from None
    if world > 1 and not 0 <= rank < world:
        raise UsageError(f"RANK {rank} in the environment is not in 0..{world - 1} (WORLD_SIZE {world})")
    return rank, world


def settled_key(prepared) -> str:
    """The hash that says a job is done: its settled Job (seed included) and the model's fingerprint."""
    from diffcli.models.fingerprint import fingerprint

    # where it ran, and how many images shared a batch, do not change what was asked; an outpaint's
    # settled inpaint_model (on: an inpainting model paints, off: the model itself) follows from the model,
    # which the key already names and fingerprints, and leaving it out keeps the keys of earlier outpaint runs
    job = replace(prepared.job, device=None, dtype=None, batch_size=None, inpaint_model=None)
    model = fingerprint(str(prepared.ref.path)) if prepared.ref is not None else None  # (upscale --method lanczos)
    payload = json.dumps({"job": _content(job, settled=True), "model": model}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class Manifest:
    """Append-only record of finished jobs; one JSON line per job, written whole with O_APPEND so
    several processes can share it. What it says is checked, not trusted: a job counts as done only
    where each of its recorded files is a plain name in the output directory, a regular file there
    (not a link), whose image records this job's key."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / MANIFEST
        self.done: dict[str, list[str]] = {}
        for line in self._text().splitlines():
            try:
                entry = json.loads(line)
                self.done[str(entry["key"])] = [str(p) for p in entry["paths"]]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut by a crash: that job simply runs again

    def _text(self) -> str:
        import stat

        try:  # (non-blocking: a FIFO planted at its name must not hang the open)
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return ""
        except OSError as exc:  # a link planted at its name (ELOOP), or unreadable
            raise UsageError(f"{self.path}: cannot read the batch manifest ({exc.strerror or exc})") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UsageError(f"{self.path}: the batch manifest is not a regular file")
        with os.fdopen(fd, "rb") as fh:
            return fh.read().decode("utf-8", errors="replace")

    def finished(self, key: str, directory: Path) -> list[Path] | None:
        paths = self.done.get(key)
        if not paths or not all(_plain_name(p) for p in paths):
            return None
        found = [directory / p for p in paths]
        return found if all(carries_key(p, key) for p in found) else None

    def add(self, key: str, number: int, paths: list[Path]) -> None:
        entry = json.dumps({"key": key, "line": number, "paths": [p.name for p in paths], "t": round(time.time(), 3)})
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, (entry + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.done[key] = [p.name for p in paths]


def _plain_name(name: str) -> bool:
    """A file name alone: no directory part, not absolute, not . or .., no NUL."""
    return (
        bool(name)
        and name not in (".", "..")
        and "\0" not in name
        and os.sep not in name
        and (os.altsep is None or os.altsep not in name)
    )


def carries_key(path: Path, key: str) -> bool:
    """Is PATH a regular file (not a link) whose image records batch key KEY (metadata `batch_key`)?"""
    import stat

    from diffcli.metadata import read

    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        return (read(path)[1] or {}).get("batch_key") == key
    except (OSError, UsageError):
        return False


def _adopt(prepared, key: str) -> bool:
    """Files of this job already written (a kill between save and manifest): keep them if their
    recorded key is this job's."""
    return bool(prepared.paths) and all(carries_key(p, key) for p in prepared.paths)


def run_batch(
    lines: list[Line],
    out: str | None,
    fmt: str | None,
    opts,
    reporter,
    keep_going: bool,
    shard: tuple[int, int],
    batch_size: int = 1,
    *,
    release_last: bool = True,
    total_jobs: int | None = None,
    rejected: int = 0,
) -> int:
    """Run LINES (this shard's share), skipping finished jobs; returns the number of failed jobs,
    REJECTED (bad lines --keep-going left out, this process's share of them) included.

    Jobs run grouped by model: each model is loaded once and released when its last job is done.
    With BATCH_SIZE > 1, text-to-image jobs whose settled settings agree (run.batch_signature) are
    denoised together, up to BATCH_SIZE images at a time. RELEASE_LAST=False keeps the last model
    loaded (a worker that runs more chunks); TOTAL_JOBS is the whole list's size when LINES is one
    process's part of it. Result lines go to opts.results when set, else stdout."""
    from itertools import groupby

    from diffcli.output import DEFAULT_TEMPLATE, check_output_dir, release_reservations, split_out

    if out and split_out(out)[1:] != (DEFAULT_TEMPLATE, None):  # (before: a folder named o/{seed}.png)
        raise UsageError(f"-o {out}: a batch writes to a folder (its files are named LLLLL-KEY-SEED-PROMPT)")
    directory = Path(out or "outputs")
    check_output_dir(str(directory) + os.sep)
    manifest = Manifest(directory)
    index, count = shard
    mine = [line for i, line in enumerate(lines) if i % count == index]
    mine.sort(key=lambda line: str(line.job.model or ""))
    reporter.emit("batch_start", jobs=len(mine), total_jobs=total_jobs or len(lines), shard=f"{index}/{count}")
    tally = {"done": 0, "skipped": 0, "failed": rejected}
    t0 = time.perf_counter()
    position = {id(line): k + 1 for k, line in enumerate(mine)}
    groups = [list(group) for _, group in groupby(mine, key=lambda line: str(line.job.model or ""))]
    try:
        for g, group in enumerate(groups):
            pending = []
            for line in group:
                with _job_errors(line, reporter, keep_going, tally):
                    planned = _plan(line, directory, fmt, opts, manifest, reporter, tally)
                    if planned is not None:
                        pending.append((line, *planned))
            for cluster in _clusters(pending, batch_size):
                with _job_errors(cluster[0][0], reporter, keep_going, tally, len(cluster)):
                    _run_cluster(cluster, manifest, reporter, batch_size, position, len(mine))
                    tally["done"] += len(cluster)
            release_reservations()
            if release_last or g < len(groups) - 1:
                _release_models()
    finally:
        release_reservations()
    reporter.emit(
        "batch_done",
        jobs_done=tally["done"],
        jobs_skipped=tally["skipped"],
        jobs_failed=tally["failed"],
        total_s=round(time.perf_counter() - t0, 3),
    )
    return tally["failed"]


class _job_errors:
    """A job's usage or runtime error: counted, reported with its line, and fatal unless --keep-going."""

    def __init__(self, line: Line, reporter, keep_going: bool, tally: dict, jobs: int = 1) -> None:
        self.line, self.reporter, self.keep_going, self.tally, self.jobs = line, reporter, keep_going, tally, jobs

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or not isinstance(exc, DiffcliError):
            return False
        self.tally["failed"] += self.jobs
        self.reporter.warn(f"line {self.line.number}: {exc}")
        return self.keep_going  # True swallows the error


def _plan(line: Line, directory: Path, fmt: str | None, opts, manifest: Manifest, reporter, tally: dict):
    """(planned job, its options, its key) for a job still to run; None when it is already done."""
    from diffcli import run as engine

    job_opts = replace(opts, out=str(directory) + os.sep, fmt=fmt)
    prepared = engine.settle(line.job, job_opts, reporter)
    key = settled_key(prepared)
    finished = manifest.finished(key, directory)
    if finished is not None and fmt is not None and not _in_format(finished, fmt):
        finished = None  # done, but another --format was asked for this time: made again in it
    if finished is not None:
        tally["skipped"] += 1
        reporter.emit("job_skipped", line=line.number, key=key, reason="done")
        _print_done(finished, line, opts)
        return None
    # names carry the line and the key: a file already there with this name that records the key is
    # this very job's (same settings, same pixels), so replacing it loses nothing; one that does not is
    # refused below unless --overwrite
    ext = (fmt or "png").lower()
    job_opts = replace(
        job_opts,
        out=str(directory / f"{line.number:05d}-{key[:8]}-{{seed}}-{{prompt}}.{ext}"),
        overwrite=True,
        batch_key=key,
    )
    planned = engine.plan_outputs(prepared, job_opts)
    if _adopt(planned, key):
        manifest.add(key, line.number, planned.paths)
        tally["skipped"] += 1
        reporter.emit("job_skipped", line=line.number, key=key, reason="files present")
        _print_done(planned.paths, line, opts)
        return None
    foreign = [path for path in planned.paths if os.path.lexists(path) and not carries_key(path, key)]
    if foreign and not opts.overwrite:  # this job's name, but not its image (edited since it was made?)
        raise UsageError(
            f"{foreign[0]} is there but is not this job's image (it records no batch key {key}); "
            "move it away, or pass --overwrite to replace it"
        )
    return planned, job_opts, key


def _in_format(paths: list[Path], fmt: str) -> bool:
    """Whether the files at PATHS are of --format FMT (by their names: jpg and jpeg are one)."""
    from diffcli.output import FORMATS

    return all(FORMATS.get(path.suffix.lower().lstrip(".")) == FORMATS.get(fmt.lower()) for path in paths)


def _clusters(pending: list, batch_size: int) -> list[list]:
    """Jobs that can be denoised together, in list order; each job alone when BATCH_SIZE is 1."""
    from diffcli import run as engine

    if batch_size <= 1:
        return [[item] for item in pending]
    clusters: dict[tuple, list] = {}
    for item in pending:
        clusters.setdefault(engine.batch_signature(item[1]), []).append(item)
    return list(clusters.values())


def _run_cluster(cluster: list, manifest: Manifest, reporter, batch_size: int, position: dict, jobs: int) -> None:
    from diffcli import run as engine

    for line, _, _, key in cluster:
        reporter.emit("job", line=line.number, job=position[id(line)], jobs=jobs, key=key)
    if len(cluster) == 1:
        line, planned, job_opts, key = cluster[0]
        manifest.add(key, line.number, engine.execute(planned, job_opts, reporter))
        return
    written = engine.execute_group([(planned, job_opts) for _, planned, job_opts, _ in cluster], reporter, batch_size)
    for (line, _, _, key), paths in zip(cluster, written):
        manifest.add(key, line.number, paths)


def _print_done(paths: list[Path], line: Line, opts) -> None:
    """The results list every image of the batch, whether made now or by an earlier run."""
    for path in paths:
        text = json.dumps({"path": str(path), "line": line.number, "skipped": True}) if opts.json else str(path)
        if opts.results is not None:
            opts.results(text)
        else:
            sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _release_models() -> None:
    if "diffcli.pipelines" in sys.modules:
        sys.modules["diffcli.pipelines"].release_models()
