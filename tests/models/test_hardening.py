"""Issue 16 (hardening) for the model manager: lost records, unusable directories, quiet/JSON downloads,
flags that exist where messages and docs say, pickle status, empty names, and `models verify tiny`.

Everything runs on real files, the real Typer app and the fake hub on 127.0.0.1."""

from __future__ import annotations

import json
import re
import shutil
import socket
from pathlib import Path

import pytest

from diffcli.errors import RuntimeFailure, UsageError
from diffcli.models import hub, registry, resolve, url_store, urls
from diffcli.models import verify as verify_mod

from .fakehub import safetensors_bytes, sd_repo_files
from helpers import ROOT, cli, heavy_imports

UNET = "unet/diffusion_pytorch_model.safetensors"
SD1_KEYS = {
    "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": ("F16", [8, 4]),
    "model.diffusion_model.input_blocks.0.0.weight": ("F16", [8, 4, 3, 3]),
    "first_stage_model.decoder.conv_in.weight": ("F16", [4, 4, 3, 3]),
}


def one_error(result, code: int) -> str:
    """The command failed with CODE and exactly one `diffcli: error:` line on stderr; returns that line."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("diffcli: error: "), result.stderr
    assert "Traceback" not in result.stderr and "--debug" not in lines[0]
    return lines[0]


@pytest.fixture
def url_ckpt(fakehub):
    """An SD1 checkpoint at a URL (and the repo its tokenizer files come from)."""
    from diffcli.models.single_file import tokenizer_repo

    fakehub.add_repo(tokenizer_repo("sd1"), sd_repo_files())
    data = safetensors_bytes({**SD1_KEYS, "big": ("F32", [50_000])}, 3)
    fakehub.plain["/files/model.safetensors"] = (data, {})
    return f"{fakehub.url}/files/model.safetensors", data


def _two_revisions(fakehub):
    files = sd_repo_files()
    repo = fakehub.add_repo("acme/two", files)
    v2 = dict(files)
    v2[UNET] = files[UNET][:-4] + b"\x01\x02\x03\x04"
    repo.refs["v2"] = "b" * 40
    repo.by_commit["b" * 40] = v2
    assert cli("models", "pull", "acme/two", "-q").exit_code == 0
    assert cli("models", "pull", "acme/two@v2", "-q").exit_code == 0
    return repo


# ---------------------------------------------------------------- 4: lost model records


def test_rm_of_a_revision_that_is_not_there_is_an_error_and_deletes_nothing(fakehub):
    repo = _two_revisions(fakehub)
    before = dict(registry.entries())
    line = one_error(cli("models", "rm", "acme/two@missing-rev", "-y"), 2)
    assert "missing-rev" in line and "v2" in line  # names what is there
    assert registry.entries() == before
    for commit in (repo.commit, "b" * 40):
        assert (hub.repo_folder("acme/two") / "snapshots" / commit).is_dir()
    # an unknown commit hash is no different
    one_error(cli("models", "rm", "acme/two@" + "c" * 40, "-y"), 2)
    assert registry.entries() == before
    assert resolve("acme/two@v2", offline=True).revision == "b" * 40


def test_rm_of_a_revision_removes_only_that_revisions_records(fakehub):
    repo = _two_revisions(fakehub)
    assert cli("models", "rm", "acme/two@v2", "-y").exit_code == 0
    keys = [k for k in registry.entries() if "acme/two" in k]
    assert keys == ["hub:acme/two@main"]
    assert registry.get("hub:acme/two@main")["status"] == "complete"
    assert resolve("acme/two", offline=True).revision == repo.commit


def test_rm_of_an_interrupted_revision_pull_removes_only_its_record(fakehub):
    _two_revisions(fakehub)
    registry.update(
        "hub:acme/two@v3", repo_id="acme/two", revision="v3", commit="c" * 40, status="partial", source="hub"
    )
    before = set(registry.entries())
    r = cli("models", "rm", "acme/two@v3", "-y")
    assert r.exit_code == 0, r.stderr
    assert set(registry.entries()) == before - {"hub:acme/two@v3"}
    assert resolve("acme/two@v2", offline=True).revision == "b" * 40


def test_url_checkpoints_pulled_before_source_json_get_one_when_used(url_ckpt):
    url, _ = url_ckpt
    path, _ = urls.pull(url, quiet=True)
    source = path.parent / url_store.SOURCE_FILE
    assert json.loads(source.read_text())["url"] == url
    source.unlink()
    resolve(url, offline=True)
    assert json.loads(source.read_text())["sha256"] == registry.get(url_store.registry_key(url))["sha256"]


def test_damaged_registry_is_kept_aside_reported_once_and_rebuilt(fakehub, sd_repo, url_ckpt, isolated_home):
    url, data = url_ckpt
    assert cli("models", "pull", url, "-q").exit_code == 0
    assert cli("models", "pull", sd_repo, "-q").exit_code == 0
    sha = registry.get(url_store.registry_key(url))["sha256"]
    path = registry.registry_path()
    damaged = path.read_text()[:-40] + "\x00garbage"
    path.write_text(damaged)

    r = cli("models", "list", "--json")
    assert r.exit_code == 0, r.stderr
    warnings = r.stderr.strip().splitlines()
    assert len(warnings) == 1 and "warning" in warnings[0] and "models.json.corrupt-" in warnings[0], r.stderr
    aside = list(path.parent.glob("models.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == damaged  # kept, byte for byte
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    # the URL checkpoint is rebuilt from what is on disk (with its sha256), the hub model found in the cache
    assert rows[url_store.registry_key(url)[4:]]["status"] == "complete"
    assert rows[sd_repo]["status"] in ("complete", "adopted")
    assert registry.get(url_store.registry_key(url))["sha256"] == sha
    json.loads(path.read_text())  # a valid registry again

    r = cli("models", "list", "--json")  # reported once: the next command is quiet
    assert r.exit_code == 0 and r.stderr == ""
    fakehub.plain.clear()  # no second download: the rebuilt record is used
    assert resolve(url).path.read_bytes() == data
    assert cli("models", "verify", url).exit_code == 0


def test_damaged_registry_warning_is_a_json_event_in_json_mode(fakehub, url_ckpt, capfd):
    from diffcli.models.single_file import tokenizer_repo

    url, _ = url_ckpt
    urls.pull(url, quiet=True)
    registry.registry_path().write_text("{not json")
    capfd.readouterr()
    resolve(url, progress="json")
    out, err = capfd.readouterr()
    assert out == ""
    events = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    warnings = [e for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and "corrupt-" in warnings[0]["message"]
    # the checkpoint's record was rebuilt from disk: only its family's tokenizer files are fetched
    assert {e["model"] for e in events if e["event"] == "download"} <= {tokenizer_repo("sd1")}


# ---------------------------------------------------------------- 8: unusable directories


@pytest.mark.parametrize("where", ["file", "under-file"])
@pytest.mark.parametrize(
    "command", [["list"], ["list", "--json"], ["verify"], ["verify", "acme/x"], ["info", "acme/x"]]
)
def test_unreadable_hf_cache_is_one_clear_line(tmp_path, monkeypatch, where, command):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    cache = blocker if where == "file" else blocker / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    line = one_error(cli("models", *command), 1)
    assert str(cache) in line and "HF_HUB_CACHE" in line
    assert "NotADirectoryError" not in line and "Errno" not in line


def test_unusable_diffcli_home_for_pull_is_one_clear_line(fakehub, url_ckpt, tmp_path, monkeypatch):
    url, _ = url_ckpt
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    monkeypatch.setenv("DIFFCLI_HOME", str(blocker / "home"))
    line = one_error(cli("models", "pull", url, "-q"), 1)
    assert "DIFFCLI_HOME" in line and str(blocker / "home") in line
    assert "NotADirectoryError" not in line and "Errno" not in line
    fakehub.add_repo("acme/tiny-sd", sd_repo_files())
    line = one_error(cli("models", "pull", "acme/tiny-sd", "-q"), 1)
    assert "DIFFCLI_HOME" in line


# ---------------------------------------------------------------- 14: -q / --json downloads


def test_resolve_json_progress_writes_json_lines_on_stderr_only(url_ckpt, capfd):
    url, data = url_ckpt
    capfd.readouterr()
    ref = resolve(url, progress="json")
    out, err = capfd.readouterr()
    assert ref.path.read_bytes() == data
    assert out == ""
    events = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    assert {e["event"] for e in events} == {"download"}
    downloads = [e for e in events if e["model"] == url]  # then the tokenizer files of its family
    assert downloads[0]["bytes"] == 0 and downloads[-1]["bytes"] == len(data) == downloads[-1]["total"]
    assert all(isinstance(e["t"], float) for e in events)


def test_resolve_quiet_and_callable_progress_for_hub_downloads(fakehub, sd_repo, capfd, monkeypatch):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")  # huggingface_hub's own bars would show now
    capfd.readouterr()
    resolve(sd_repo, progress="quiet")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    fakehub.add_repo("acme/other", sd_repo_files())
    seen = []
    resolve("acme/other", progress=lambda event, **data: seen.append((event, data)))
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert seen and {e for e, _ in seen} == {"download"} and seen[-1][1]["model"] == "acme/other"
    assert seen[-1][1]["bytes"] == seen[-1][1]["total"] > 0
    with pytest.raises(ValueError):
        resolve("tiny", progress="loud")


def test_resolve_auto_progress_draws_the_bar(url_ckpt, capfd):
    url, _ = url_ckpt
    capfd.readouterr()
    resolve(url)
    out, err = capfd.readouterr()
    assert out == "" and "pulling model.safetensors" in err


# ---------------------------------------------------------------- 15: flags, messages and docs agree


def _custom_code_repo(fakehub):
    files = sd_repo_files()
    index = json.loads(files["model_index.json"])
    index["unet"] = ["my_unet_module", "FancyUNet"]
    files["model_index.json"] = json.dumps(index).encode()
    fakehub.add_repo("acme/custom", files)


def test_remote_code_message_points_at_the_command_that_has_the_flag(fakehub):
    _custom_code_repo(fakehub)
    with pytest.raises(UsageError) as err:
        resolve("acme/custom", quiet=True)  # what a generation command does
    assert "`diffcli models pull acme/custom --trust-remote-code`" in str(err.value)
    line = one_error(cli("models", "pull", "acme/custom", "-q"), 2)
    assert "diffcli models pull acme/custom --trust-remote-code" in line
    assert "--trust-remote-code" in _flags("models", "pull")
    assert "--trust-remote-code" not in _flags("txt2img")


def test_gated_and_private_messages_do_not_offer_token_to_generation(fakehub):
    with pytest.raises(UsageError) as err:
        resolve("acme/private-one", quiet=True)
    assert "HF_TOKEN" in str(err.value) and "diffcli models pull acme/private-one --token" in str(err.value)


def _flags(*command: str) -> set[str]:
    import typer

    from diffcli.cli.app import app

    cmd = typer.main.get_command(app)
    for part in command:
        cmd = cmd.commands[part]
    return {opt for p in cmd.params for opt in p.opts}


def test_docs_say_which_command_has_which_flag():
    text = (ROOT / "docs" / "models.md").read_text()
    section = text.split("## Which command takes which flag", 1)[1].split("\n## ", 1)[0]
    rows = [r for r in section.splitlines() if r.startswith("| `--")]
    assert len(rows) >= 8
    generation = ("txt2img", "img2img", "inpaint", "upscale")
    for row in rows:
        flag, on_pull, on_generate = [c.strip() for c in row.strip("|").split("|")[:3]]
        flag = flag.strip("`").split()[0]
        assert (flag in _flags("models", "pull")) == on_pull.startswith("yes"), row
        for command in generation:
            assert (flag in _flags(command)) == on_generate.startswith("yes"), (row, command)
    # and nothing in the doc implies a model flag a generation command lacks
    for flag in ("--revision", "--sha256", "--variant", "--trust-remote-code", "--token"):
        assert any(r.startswith(f"| `{flag}") for r in rows), flag


# ---------------------------------------------------------------- 16: pickle status, empty names


def _pickle_only_repo():
    files = sd_repo_files()
    del files[UNET]
    del files["unet/diffusion_pytorch_model.fp16.safetensors"]
    return files


def test_pickle_models_are_not_listed_complete(fakehub, tmp_path):
    fakehub.add_repo("acme/pickly", _pickle_only_repo())
    assert cli("models", "pull", "acme/pickly", "--allow-pickle", "-q").exit_code == 0
    fakehub.plain["/files/old.ckpt"] = (b"ckpt" * 64, {})
    url = f"{fakehub.url}/files/old.ckpt"
    assert cli("models", "pull", url, "--allow-pickle", "-q").exit_code == 0
    rows = {row["name"]: row for row in json.loads(cli("models", "list", "--json").stdout)}
    assert rows["acme/pickly"]["status"] == "pickle"
    assert rows[url]["status"] == "pickle"
    assert json.loads(cli("models", "info", "acme/pickly", "--json").stdout)["status"] == "pickle"
    assert "pickle" in cli("models", "info", "acme/pickly").stdout
    with pytest.raises(UsageError, match="--allow-pickle"):
        resolve("acme/pickly", offline=True)


@pytest.mark.parametrize("name", ["", "  "])
def test_empty_model_name_is_a_usage_error(name):
    with pytest.raises(UsageError, match="empty"):
        resolve(name)
    one_error(cli("txt2img", "a castle", "--model", name), 2)


# ---------------------------------------------------------------- UX


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_hub_says_what_to_do_next(monkeypatch):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    line = one_error(cli("models", "pull", "acme/x", "-q"), 1)
    for hint in ("network", "HF_ENDPOINT", endpoint, "--offline", "diffcli models pull"):
        assert hint in line, (hint, line)
    with pytest.raises(RuntimeFailure, match="--offline"):
        resolve("acme/x", quiet=True)


def test_models_aliases_lists_what_can_be_pulled(fakehub):
    from diffcli.models.aliases import ALIASES

    fakehub.add_repo(ALIASES["sd-turbo"].repo_id, sd_repo_files())
    assert cli("models", "pull", "sd-turbo", "-q").exit_code == 0
    r = cli("models", "aliases")
    assert r.exit_code == 0, r.stderr
    for name, alias in ALIASES.items():
        assert name in r.stdout and alias.repo_id in r.stdout
    rows = {row["name"]: row for row in json.loads(cli("models", "aliases", "--json").stdout)}
    assert set(rows) == set(ALIASES)
    assert rows["sd-turbo"]["downloaded"] is True and rows["sdxl"]["downloaded"] is False
    assert rows["sdxl"]["defaults"]["steps"] == 30
    assert "diffcli models aliases" in cli("models", "list").stderr  # `models list` points at them


def test_models_info_prints_no_python_dicts():
    r = cli("models", "info", "tiny-lcm")
    assert r.exit_code == 0, r.stderr
    assert not re.search(r"[{\[]'", r.stdout) and "': " not in r.stdout, r.stdout
    assert re.search(r"^\s+teacher:\s+tiny$", r.stdout, re.M), r.stdout
    d = json.loads(cli("models", "info", "tiny-lcm", "--json").stdout)
    assert d["recommended"]["steps"] == 4
    assert all(not isinstance(v, (dict, list)) for v in d["recommended"].values())
    assert d["extra"]["distilled_from"]["teacher"] == "tiny"


def test_verify_bundled_model():
    r = cli("models", "verify", "tiny")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert r.stdout.startswith("tiny: ok (")
    assert json.loads(cli("models", "verify", "tiny-lcm", "--json").stdout)[0]["ok"] is True


def test_bundled_hashes_match_the_shipped_files():
    """The recorded hashes are those of the package's files (regenerate: python -m diffcli.models.bundled)."""
    from diffcli.bundled import MODEL_NAMES, model_dir

    for name in MODEL_NAMES:
        if (model_dir(name) / "model_index.json").is_file():
            report = verify_mod.verify_bundled(name)
            assert not report.damaged, [(c.file, c.problem) for c in report.damaged]
            assert len(report.checks) >= 10


def test_verify_detects_damage_in_a_copy_of_the_bundled_model(tmp_path):
    from diffcli.bundled import model_dir

    copy = Path(shutil.copytree(model_dir("tiny"), tmp_path / "tiny"))
    assert not verify_mod.verify_bundled("tiny", path=copy).damaged
    weights = copy / UNET
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF  # one flipped byte in the last tensor
    weights.write_bytes(bytes(raw))
    (copy / "tokenizer" / "merges.txt").unlink()
    problems = {c.file: c.problem for c in verify_mod.verify_bundled("tiny", path=copy).damaged}
    assert problems == {UNET: "hash mismatch", "tokenizer/merges.txt": "missing"}


# ---------------------------------------------------------------- fast start


@pytest.mark.parametrize(
    "args",
    [
        ["models", "list"],
        ["models", "info", "tiny-lcm"],
        ["models", "verify", "tiny"],
        ["models", "aliases"],
        ["models", "rm", "acme/absent", "-y"],
        ["models", "verify"],
    ],
)
def test_model_commands_do_not_import_torch(args):
    r = heavy_imports(*args)
    assert "HEAVY=\n" in r.stderr, r.stderr


def test_a_generation_that_pulls_follows_json_mode(fakehub, sd_repo, tmp_path):
    from helpers import cli

    r = cli("txt2img", "x", "-m", sd_repo, "--steps", "1", "--seed", "1", "-o", tmp_path / "o", "--json")
    lines = r.stderr.splitlines()
    if r.exit_code:  # the fake hub's weights are placeholders: the load fails after the download
        assert lines[-1].startswith("diffcli: error: cannot load model") and r.stdout == ""
        lines = lines[:-1]
    events = [json.loads(line) for line in lines]  # stderr: JSON lines only, no bar
    assert [e["event"] for e in events][:2] == ["download", "download"] and "start" in {e["event"] for e in events}


def test_an_unusable_output_dir_fails_before_any_download(fakehub, sd_repo, tmp_path):
    from helpers import cli

    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("txt2img", "x", "-m", sd_repo, "-o", blocker / "o", "--json")
    assert r.exit_code == 2 and "cannot create output directory" in r.stderr
    assert fakehub.paths_requested() == []


@pytest.mark.parametrize(
    "url, said",
    [
        ("https://user:s3cret@127.0.0.1/x.safetensors?token=abc123", "a user or password in the URL is not supported"),
        ("http://[::1/x.safetensors", "is not a valid URL (Invalid IPv6 URL)"),
        ("https://127.0.0.1:99999/x.safetensors", "is not a valid URL (Port out of range 0-65535)"),
        ("https:///x.safetensors", "is not a valid URL (no host)"),
    ],
)
def test_a_url_with_credentials_or_no_valid_host_is_a_usage_error_that_keeps_its_secrets(url, said, isolated_home):
    for command in (["models", "pull", url], ["models", "info", url], ["txt2img", "castle", "-m", url]):
        line = one_error(cli(*command), 2)
        assert said in line and "s3cret" not in line and "abc123" not in line, line
    assert not (isolated_home / "diffcli" / "checkpoints").exists()


def test_a_pull_that_gets_no_byte_leaves_no_partial_pull(isolated_home):
    url = f"http://127.0.0.1:{_closed_port()}/x.safetensors"
    line = one_error(cli("models", "pull", url, "-q"), 1)
    assert "cannot download" in line
    assert list((isolated_home / "diffcli" / "checkpoints").iterdir()) == []  # no empty folder of its own
    assert not [k for k in registry.entries() if k.startswith("url")], registry.entries()
    assert "partial" not in cli("models", "list").stdout


def test_models_info_of_a_path_that_is_no_model_says_so(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    line = one_error(cli("models", "info", str(tmp_path / "notes.txt")), 2)
    assert line.endswith("notes.txt: not a model (expected a .safetensors checkpoint or a diffusers directory)")
    line = one_error(cli("models", "info", str(tmp_path)), 2)
    assert line.endswith("directory is not a diffusers model (no model_index.json)")
