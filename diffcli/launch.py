"""`diffcli batch --launcher accelerate|ray`: one job list spread over several processes by an
existing engine (Hugging Face accelerate, or Ray Data), each process running `run_batch` on its share.

Nothing new about jobs lives here: every process runs the same `diffcli.batch.run_batch`, whose
manifest (appended whole with O_APPEND) and file names (line and key) already let shares share one
output directory, and let a rerun skip what any of them finished.

- accelerate: this process checks the job list, then re-launches `diffcli batch` (the same flags,
  less --launcher/--processes) through `accelerate launch --multi_gpu --num_processes N` (plain
  `--num_processes` alone runs one process on a CPU-only or one-GPU machine). Each rank takes its
  share with `PartialState().split_between_processes` (contiguous runs of the list), and prints the
  paths of its own files; this process relays them on stdout and turns every rank's outcome into
  the exit code.
- ray: this process checks the job list and hands it to Ray Data in chunks; a pool of N actors
  (`map_batches` with a callable class, one GPU or a share of the CPUs each) runs `run_batch` on
  each chunk, keeping its model loaded from one chunk to the next, and returns the result lines and
  progress events, which this process prints.

torch, accelerate and ray are imported inside functions only: `diffcli batch --help` loads none.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from diffcli.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    DiffcliError,
    RuntimeFailure,
    Terminated,
    UsageError,
    print_error,
)

LAUNCHERS = ("accelerate", "ray")
STATUS_ENV = "DIFFCLI_LAUNCH_STATUS"  # set by `--launcher accelerate` for its ranks: where each reports its outcome
RAY_INSTALL = "pip install 'diffcli[ray]'"
_LAUNCH_FLAGS = {"launcher", "processes", "address"}
_MAX_CHUNK = 8  # ray: jobs per chunk at most (a chunk's paths reach stdout when the chunk is done)


def launched() -> bool:
    """Is this process one rank of several started by a launcher (accelerate launch, torchrun)?
    RANK/WORLD_SIZE alone (set by hand, say) keep the plain every-N-th split of `shard_of`."""
    from diffcli.batch import env_rank

    return env_rank()[1] > 1 and "LOCAL_RANK" in os.environ and "MASTER_ADDR" in os.environ


# ---------------------------------------------------------------------------------------------------
# one rank under accelerate launch / torchrun


def rank_batch(params: dict, base, opts) -> int:
    """Run this rank's share of the job list; returns the exit code for this process."""
    from diffcli.batch import env_rank, read_lines, rejected_share, run_batch, shard_of

    rank = env_rank()[0]
    shard = shard_of(params["shard"]) if params.get("shard") else (0, 1)
    reporter = _rank_reporter(params["json"], params["quiet"], rank)
    under_us = bool(os.environ.get(STATUS_ENV))
    # bad lines were reported by `--launcher` before it started the ranks, or are reported by rank 0
    warn = (lambda message: None) if under_us or rank > 0 else reporter.warn
    failed, code = 0, 0
    try:
        lines = read_lines(params["source"], base, params["keep_going"], warn)
        share = [line for i, line in enumerate(lines) if i % shard[1] == shard[0]]
        state = _partial_state()
        try:
            with state.split_between_processes(share) as part:
                part = list(part)
            # the bad lines --keep-going left out count as failed jobs, once: on rank 0
            failed = run_batch(
                part,
                params["out"],
                params["format"],
                opts,
                reporter,
                params["keep_going"],
                (0, 1),
                batch_size=params.get("batch_size") or 1,
                total_jobs=len(lines),
                rejected=rejected_share(lines.rejected, shard) if rank == 0 else 0,
            )
        finally:
            state.destroy_process_group()
    except KeyboardInterrupt as exc:
        code = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
        raise
    except DiffcliError as exc:
        code = exc.exit_code
        raise
    except Exception:
        code = EXIT_FAILURE
        raise
    finally:
        reporter.close()
        _write_status(rank, failed, code)
    # Under `--launcher` the parent reads the failures from the status file: a rank exiting 1 would
    # make the launcher stop the other ranks, though --keep-going asked them to go on.
    return EXIT_FAILURE if failed and not under_us else 0


def _partial_state():
    import torch
    from accelerate import PartialState

    from diffcli.batch import env_rank

    state = PartialState(cpu=not torch.cuda.is_available())  # gloo on CPU; NCCL, one GPU per rank, on CUDA
    world = env_rank()[1]
    if state.num_processes != world:  # each rank would run every job
        raise RuntimeFailure(f"accelerate sees {state.num_processes} process(es) but WORLD_SIZE is {world}")
    return state


def _write_status(rank: int, failed: int, code: int) -> None:
    directory = os.environ.get(STATUS_ENV)
    if not directory:
        return
    path = Path(directory) / f"rank-{rank}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rank": rank, "failed": failed, "code": code}))
    os.replace(tmp, path)


def _rank_reporter(json_mode: bool, quiet: bool, rank: int):
    """JSON events carry the rank; on a terminal rank 0 shows its bar and the others their warnings."""
    from diffcli.progress import JsonReporter, Reporter, RichReporter, make_reporter

    class RankJson(JsonReporter):
        def emit(self, event: str, **data) -> None:
            super().emit(event, rank=rank, **data)

    class RankWarnings(Reporter):
        def warn(self, message: str) -> None:
            sys.stderr.write(f"warning: [rank {rank}] {message}\n")
            sys.stderr.flush()

    return make_reporter(json_mode, quiet, json=RankJson, terminal=RichReporter if rank == 0 else RankWarnings)


# ---------------------------------------------------------------------------------------------------
# the process that was given --launcher


def launch_batch(launcher: str, params: dict, base, processes: int | None, address: str | None) -> int:
    """Check the job list here, then run it through LAUNCHER; returns the exit code."""
    from diffcli.output import check_output_dir
    from diffcli.progress import make_reporter

    if launcher == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise UsageError(f"--launcher ray needs Ray, which is not installed here: {RAY_INSTALL}")
    reporter = make_reporter(params["json"], params["quiet"])
    try:
        with tempfile.TemporaryDirectory(prefix="diffcli-launch-") as tmp:
            source, lines = _read_checked(params, base, reporter, Path(tmp))
            check_output_dir(str(Path(params["out"] or "outputs")) + os.sep)
            if launcher == "accelerate":
                return _accelerate(params, base, source, lines, processes, Path(tmp), reporter)
            return _ray(params, base, lines, processes, address, reporter)
    finally:
        reporter.close()


def _read_checked(params: dict, base, reporter, tmp: Path):
    """Every line checked (and bad ones reported) once, here; stdin saved for the ranks to read."""
    from diffcli.batch import read_lines

    source = params["source"]
    if source != "-":
        return source, read_lines(source, base, params["keep_going"], reporter.warn)
    text = sys.stdin.read()
    saved = tmp / "stdin-jobs"
    saved.write_text(text, encoding="utf-8")
    stdin, sys.stdin = sys.stdin, io.StringIO(text)  # so messages still name <stdin>
    try:
        return str(saved), read_lines("-", base, params["keep_going"], reporter.warn)
    finally:
        sys.stdin = stdin


def _shared_flags(params: dict) -> list[str]:
    """The command line that gives a rank the same batch, less the launcher's own flags: every option
    as the user gave it, a repeatable one (--lora, --control) once per value, each as --name=VALUE
    (so a value that starts with - stays a value); the job list last, after --."""
    args = []
    for name, value in params.items():
        if name in _LAUNCH_FLAGS or name == "source" or value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            args += [f"{flag}={item}" for item in value]
        else:
            args.append(f"{flag}={value}")
    return [*args, "--", params["source"]]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def _accelerate(params: dict, base, source: str, lines: list, processes: int | None, tmp: Path, reporter) -> int:
    import torch

    count = processes or max(torch.cuda.device_count(), 1)
    if count == 1:  # one process: the plain batch, no launcher needed
        from diffcli.batch import rejected_share, run_batch, shard_of
        from diffcli.flags import run_options

        shard = shard_of(params["shard"]) if params.get("shard") else (0, 1)
        failed = run_batch(
            lines,
            params["out"],
            params["format"],
            run_options(params, base),
            reporter,
            params["keep_going"],
            shard,
            batch_size=params.get("batch_size") or 1,
            rejected=rejected_share(lines.rejected, shard),
        )
        return EXIT_FAILURE if failed else 0
    status = tmp / "status"
    status.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "diffcli.launch",  # accelerate launch, less its traceback when a rank fails
        # --multi_gpu means "start N processes through torch.distributed.run"; on a machine
        # without CUDA each rank finds no GPU and joins a gloo group on the CPU
        "--multi_gpu",
        "--num_processes",
        str(count),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
    ]
    if not os.environ.get("OMP_NUM_THREADS"):  # else accelerate passes it on as it is
        cmd += ["--num_cpu_threads_per_process", str(max(1, _cpus() // count))]
    cmd += ["-m", "diffcli", "batch", *_shared_flags({**params, "source": source})]
    env = {**os.environ, STATUS_ENV: str(status)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
    interrupted = None
    try:
        _relay(proc)
    except KeyboardInterrupt as exc:  # Ctrl-C reached the ranks too; SIGTERM only this process
        interrupted = exc
        if isinstance(exc, Terminated):
            proc.send_signal(signal.SIGTERM)
        try:
            _relay(proc)  # the paths of images finished while the ranks stop
        except KeyboardInterrupt:
            proc.kill()
    returncode = proc.wait()
    if interrupted is not None:
        raise interrupted
    return _outcome(status, count, returncode)


def _accelerate_launch(argv: list[str]) -> None:
    """`accelerate launch ARGV` through accelerate's own parser and launcher. When a rank fails, the
    rank has said why; torch's elastic agent would add its logs and a traceback, left out here
    (unless --debug)."""
    import logging

    from accelerate.commands.launch import launch_command, launch_command_parser

    args = launch_command_parser().parse_args(argv)
    debug = "--debug" in argv
    if not debug:
        import torch.distributed.elastic.multiprocessing.api  # noqa: F401 - its loggers exist now
        import torch.distributed.run  # noqa: F401

        for name in list(logging.root.manager.loggerDict):
            if name.startswith("torch.distributed"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        launch_command(args)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001
        if debug:
            raise
        name = type(exc).__name__
        if name == "SignalException":  # Ctrl-C or SIGTERM: the agent stopped the ranks, which said so
            sys.exit(128 + int(getattr(exc, "sigval", 0) or 0))
        if name != "ChildFailedError":
            raise
        sys.exit(EXIT_FAILURE)


def _relay(proc) -> None:
    """Each rank prints the paths of its own files; they reach stdout whole, one line at a time."""
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()


def _outcome(status: Path, count: int, returncode: int) -> int:
    reports = []
    for rank in range(count):
        try:
            reports.append(json.loads((status / f"rank-{rank}.json").read_text()))
        except (OSError, ValueError):
            continue
    codes = [r["code"] for r in reports]
    real = [c for c in codes if c not in (0, EXIT_INTERRUPTED, EXIT_TERMINATED)]
    if real:
        return max(real)  # the ranks printed their own errors
    stopped = [c for c in codes if c]
    if stopped:
        return stopped[0]
    if returncode != 0 or len(reports) < count:
        print_error(
            f"accelerate launch failed (exit code {returncode}); "
            f"{count - len(reports)} of {count} processes did not report"
        )
        return EXIT_FAILURE
    return EXIT_FAILURE if any(r["failed"] for r in reports) else 0


# ---------------------------------------------------------------------------------------------------
# ray


def _ray(params: dict, base, lines: list, processes: int | None, address: str | None, reporter) -> int:
    import logging

    import ray

    from diffcli.batch import rejected_share, shard_of
    from diffcli.flags import run_options

    index, count = shard_of(params["shard"]) if params.get("shard") else (0, 1)
    share = [line for i, line in enumerate(lines) if i % count == index]
    opts = run_options(params, base)
    t0 = time.perf_counter()
    # the actors' progress comes back with their results: their own output stays in Ray's logs
    ray.init(
        address=address,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        configure_logging=True,
    )
    try:
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        workers, need = _worker_resources(ray.cluster_resources(), params.get("device"), processes)
        reporter.emit(
            "batch_start",
            jobs=len(share),
            total_jobs=len(lines),
            shard=f"{index}/{count}",
            launcher="ray",
            workers=workers,
        )
        tally = {
            "jobs": len(share),
            "started": 0,
            "jobs_done": 0,
            "jobs_skipped": 0,
            "jobs_failed": rejected_share(lines.rejected, (index, count)),
        }  # bad lines count as failed
        chunks = _chunks(share, workers, params.get("batch_size") or 1)
        if chunks:
            items = [{"lines": pickle.dumps(chunk)} for chunk in chunks]
            dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
                _RayWorker,
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=workers),
                **need,
                fn_constructor_kwargs={
                    "out": params["out"] or "outputs",
                    "fmt": params["format"],
                    "opts": opts,
                    "keep_going": params["keep_going"],
                    "cwd": os.getcwd(),
                    "batch_size": params.get("batch_size") or 1,
                },
            )
            for row in _rows(dataset):
                sys.stdout.write(row["stdout"])
                sys.stdout.flush()
                _retell(json.loads(row["events"]), reporter, tally)
                if row["error"]:
                    raise _WorkerError(row["error"], int(row["code"]))
        reporter.emit(
            "batch_done",
            **{k: tally[k] for k in ("jobs_done", "jobs_skipped", "jobs_failed")},
            total_s=round(time.perf_counter() - t0, 3),
        )
    finally:
        ray.shutdown()
    return EXIT_FAILURE if tally["jobs_failed"] else 0


def _worker_resources(resources: dict, device: str | None, processes: int | None) -> tuple[int, dict]:
    """How many actors, and what each asks Ray for: a GPU each (a share of one when there are more
    actors than GPUs), else an equal share of the CPUs."""
    gpus = 0 if (device or "auto") == "cpu" else int(resources.get("GPU", 0))
    workers = processes or max(gpus, 1)
    if gpus:
        return workers, {"num_gpus": 1 if workers <= gpus else gpus / workers}
    cpus = resources.get("CPU", 1)
    return workers, {"num_cpus": max(1, int(cpus // workers)) if workers <= cpus else cpus / workers}


def _retell(events: list[dict], reporter, tally: dict) -> None:
    """An actor's events for one chunk, told by this process's reporter (on its clock); each chunk's
    batch_start/batch_done are summed into the whole batch's instead."""
    for event in events:
        name = event.pop("event")
        event.pop("t", None)
        if name == "batch_done":
            for key in ("jobs_done", "jobs_skipped", "jobs_failed"):
                tally[key] += event[key]
        elif name == "job":
            tally["started"] += 1
            reporter.emit("job", **{**event, "job": tally["started"], "jobs": tally["jobs"]})
        elif name == "saved":
            reporter.saved(event["path"], event.get("seed"), event.get("image", 1))
        elif name == "warning":
            reporter.warn(event["message"])
        elif name == "done":
            reporter.done(**event)
        elif name != "batch_start":
            reporter.emit(name, **event)


def _rows(dataset):
    """The actors' results as they come; a worker that Ray could not keep running (killed, out of
    memory, its node lost for good) becomes one line."""
    import ray

    iterator = iter(dataset.iter_rows())
    while True:
        try:
            row = next(iterator)
        except StopIteration:
            return
        except ray.exceptions.RayError as exc:
            raise RuntimeFailure(
                f"a Ray worker failed ({type(exc).__name__}); Ray's logs on its node tell why "
                f"(/tmp/ray/session_latest/logs)"
            ) from None
        yield row


class _WorkerError(DiffcliError):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.exit_code = code


def _chunks(share: list, workers: int, batch_size: int = 1) -> list[list]:
    """Runs of the share, one model each (sorted by model, as run_batch does), small enough that
    every worker gets several and results stream back, large enough that a chunk is not mostly
    overhead (run_batch reads the manifest once per chunk), and at least BATCH_SIZE jobs, so jobs
    that agree can still be denoised together."""
    ordered = sorted(share, key=lambda line: str(line.job.model or ""))
    size = max(1, batch_size, min(_MAX_CHUNK, -(-len(ordered) // (4 * workers))))
    chunks: list[list] = []
    for line in ordered:
        if chunks and len(chunks[-1]) < size and chunks[-1][-1].job.model == line.job.model:
            chunks[-1].append(line)
        else:
            chunks.append([line])
    return chunks


class _RayWorker:
    """One Ray Data actor: imports the engine once and keeps its loaded model from chunk to chunk."""

    def __init__(self, out: str, fmt: str | None, opts, keep_going: bool, cwd: str, batch_size: int = 1) -> None:
        if os.path.isdir(cwd):
            os.chdir(cwd)  # relative paths (output, models, images) mean what they meant to the driver
        else:
            out = os.path.join(cwd, out)
        import diffcli.batch  # noqa: F401 - the engine, torch and diffusers: imported once per actor
        import diffcli.run  # noqa: F401

        self.out, self.fmt, self.opts, self.keep_going, self.batch_size = out, fmt, opts, keep_going, batch_size
        self.model = None

    def __call__(self, batch: dict) -> dict:
        from dataclasses import replace

        from diffcli.batch import run_batch
        from diffcli.pipelines import release_models
        from diffcli.progress import JsonReporter

        rows = {"stdout": [], "events": [], "error": [], "code": []}
        for blob in batch["lines"]:
            lines = pickle.loads(blob)
            model = lines[0].job.model
            if self.model is not None and model != self.model:
                release_models()
            self.model = model
            events, results = io.StringIO(), []
            error, code = "", 0
            opts = replace(self.opts, results=results.append)
            try:
                run_batch(
                    lines,
                    self.out,
                    self.fmt,
                    opts,
                    JsonReporter(events),
                    self.keep_going,
                    (0, 1),
                    batch_size=self.batch_size,
                    release_last=False,
                )
            except DiffcliError as exc:
                error, code = str(exc), exc.exit_code
            except Exception as exc:  # noqa: BLE001 - told by the driver, as the app tells it in one process
                error, code = f"{type(exc).__name__}: {exc}", EXIT_FAILURE
            rows["stdout"].append("".join(line + "\n" for line in results))
            rows["events"].append(json.dumps([json.loads(x) for x in events.getvalue().splitlines() if x]))
            rows["error"].append(error)
            rows["code"].append(code)
        return rows


if __name__ == "__main__":  # the launcher process `--launcher accelerate` starts
    _accelerate_launch(sys.argv[1:])
