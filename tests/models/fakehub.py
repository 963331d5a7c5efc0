"""A real HTTP server on 127.0.0.1 that speaks enough of the Hugging Face Hub protocol for
huggingface_hub 2.x (model info API with file metadata, HEAD/GET resolve with X-Repo-Commit,
ETag, X-Linked-Size, Range), plus plain URLs, with injectable faults."""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_EXT = (".safetensors", ".bin", ".ckpt", ".pt", ".msgpack", ".onnx", ".h5")


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]] | None = None, fill: int = 1) -> bytes:
    """A valid .safetensors file: {name: (dtype, shape)} with deterministic contents."""
    tensors = tensors or {"weight": ("F32", [4])}
    sizes = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}
    header, offset, blobs = {}, 0, []
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        blobs.append(bytes([(fill + i) % 251 for i in range(n)]))
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(blobs)


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = "a" * 40
    refs: dict[str, str] = field(default_factory=dict)  # branch/tag -> commit
    by_commit: dict[str, dict[str, bytes]] = field(default_factory=dict)  # other commits' files

    def files_at(self, commit: str) -> dict[str, bytes]:
        return self.by_commit.get(commit, self.files)


@dataclass
class Fault:
    cut_after: int | None = None  # close the connection after this many body bytes
    times: int = 1  # how many responses the fault applies to (-1: always)
    corrupt: bool = False  # same size, different bytes
    short: int = 0  # send this many bytes fewer (with a matching Content-Length)
    delay: float = 0.0  # seconds to sleep per 64 KiB chunk


class FakeHub:
    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.plain: dict[str, tuple[bytes, dict]] = {}  # /files/<name> -> (data, extra headers)
        self.faults: dict[str, Fault] = {}  # key: repo file path "org/name/file" or plain "/files/x"
        self.requests: list[tuple[str, str, dict]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes], commit: str | None = None) -> Repo:
        repo = Repo(dict(files), commit or hashlib.sha1(repo_id.encode()).hexdigest())
        self.repos[repo_id] = repo
        return repo

    def paths_requested(self, method: str = "GET") -> list[str]:
        return [p for m, p, _ in self.requests if m == method]

    # ------------------------------------------------------------ handler

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _send(self, code, body=b"", headers=None, head=False):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head and body:
                    self.wfile.write(body)

            def _error(self, code, error_code, head=False):
                body = json.dumps({"error": error_code}).encode()
                self._send(code, body, {"X-Error-Code": error_code, "Content-Type": "application/json"}, head)

            def do_HEAD(self):
                self._dispatch(head=True)

            def do_GET(self):
                self._dispatch(head=False)

            def _dispatch(self, head):
                parts = urlsplit(self.path)
                path = unquote(parts.path)
                with hub.lock:
                    hub.requests.append(
                        ("HEAD" if head else "GET", path, {k.title(): v for k, v in self.headers.items()})
                    )
                if path.startswith("/api/models/"):
                    return self._api(path[len("/api/models/") :], head)
                if path.startswith("/files/"):
                    if path not in hub.plain:
                        return self._error(404, "EntryNotFound", head)
                    data, extra = hub.plain[path]
                    return self._serve(path, data, dict(extra), head)
                bits = path.lstrip("/").split("/")
                if len(bits) >= 5 and bits[2] == "resolve":
                    return self._resolve("/".join(bits[:2]), bits[3], "/".join(bits[4:]), head)
                self._error(404, "NotFound", head)

            def _commit(self, repo, rev):
                if rev in (repo.commit, "main"):
                    return repo.commit
                if rev in repo.by_commit:
                    return rev
                return repo.refs.get(rev)

            def _api(self, rest, head):
                bits = rest.split("/")
                repo_id = "/".join(bits[:2])
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(401, "RepoNotFound", head)
                rev = unquote(bits[3]) if len(bits) >= 4 and bits[2] in ("revision", "tree") else "main"
                commit = self._commit(repo, rev)
                if commit is None:
                    return self._error(404, "RevisionNotFound", head)
                if len(bits) >= 4 and bits[2] == "tree":  # list_repo_tree (used by snapshot_download)
                    tree = []
                    for name, data in sorted(repo.files_at(commit).items()):
                        t = {"type": "file", "path": name, "size": len(data), "oid": git_sha1(data)}
                        if name.endswith(LFS_EXT):
                            t["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                        tree.append(t)
                    return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, head)
                siblings = []
                for name, data in sorted(repo.files_at(commit).items()):
                    s = {"rfilename": name, "size": len(data), "blobId": git_sha1(data)}
                    if name.endswith(LFS_EXT):
                        s["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
                    siblings.append(s)
                body = json.dumps(
                    {
                        "id": repo_id,
                        "modelId": repo_id,
                        "sha": commit,
                        "private": False,
                        "siblings": siblings,
                        "tags": [],
                        "downloads": 0,
                        "likes": 0,
                    }
                ).encode()
                self._send(200, body, {"Content-Type": "application/json"}, head)

            def _resolve(self, repo_id, rev, filename, head):
                repo = hub.repos.get(repo_id)
                if repo is None:
                    return self._error(401, "RepoNotFound", head)
                commit = self._commit(repo, rev)
                if commit is None:
                    return self._error(404, "RevisionNotFound", head)
                files = repo.files_at(commit)
                if filename not in files:
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, head)
                data = files[filename]
                lfs = filename.endswith(LFS_EXT)
                etag = hashlib.sha256(data).hexdigest() if lfs else git_sha1(data)
                headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
                if lfs:
                    headers["X-Linked-Etag"] = f'"{etag}"'
                    headers["X-Linked-Size"] = str(len(data))
                self._serve(f"{repo_id}/{filename}", data, headers, head)

            def _serve(self, key, data, headers, head):
                fault = hub.faults.get(key)
                active = fault is not None and fault.times != 0 and not head
                if active and fault.times > 0:
                    fault.times -= 1
                body = data
                if active and fault.corrupt:
                    body = bytes(b ^ 0xFF for b in data[:8]) + data[8:]
                if active and fault.short:
                    body = data[: max(len(data) - fault.short, 0)]
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and not head:
                    start = int(rng[6:].split("-")[0] or 0)
                if start:
                    if start >= len(body):
                        return self._send(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                    headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                    code = 206
                else:
                    code = 200
                chunk = body[start:]
                headers["Content-Length"] = str(len(chunk) if not head else len(data))
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if head:
                    return
                limit = fault.cut_after if active and fault.cut_after is not None else None
                sent = 0
                step = 65536
                try:
                    while sent < len(chunk):
                        piece = chunk[sent : sent + step]
                        if limit is not None and sent + len(piece) > limit:
                            piece = piece[: max(limit - sent, 0)]
                            self.wfile.write(piece)
                            self.wfile.flush()
                            self.close_connection = True
                            self.connection.shutdown(2)
                            return
                        self.wfile.write(piece)
                        sent += len(piece)
                        if active and fault.delay:
                            self.wfile.flush()
                            time.sleep(fault.delay)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    self.close_connection = True

        return Handler


def sd_repo_files(*, pickles: bool = True, extras: bool = True, fp16: bool = True, big: int = 0) -> dict[str, bytes]:
    """A diffusers SD-style repo with placeholder (but valid) safetensors weights.

    `big` makes the UNet weights about that many bytes (for progress / interruption tests)."""
    unet_shape = [max(big // 4, 16)]
    files = {
        "model_index.json": json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "_diffusers_version": "0.42.1",
                "feature_extractor": [None, None],
                "safety_checker": [None, None],
                "requires_safety_checker": False,
                "scheduler": ["diffusers", "PNDMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            }
        ).encode(),
        "scheduler/scheduler_config.json": json.dumps({"_class_name": "PNDMScheduler"}).encode(),
        "text_encoder/config.json": json.dumps({"architectures": ["CLIPTextModel"], "hidden_size": 32}).encode(),
        "text_encoder/model.safetensors": safetensors_bytes({"te": ("F32", [8])}, 3),
        "tokenizer/vocab.json": b'{"a": 0}',
        "tokenizer/merges.txt": b"#version: 0.2\n",
        "tokenizer/tokenizer_config.json": b'{"tokenizer_class": "CLIPTokenizer"}',
        "unet/config.json": json.dumps(
            {"_class_name": "UNet2DConditionModel", "in_channels": 4, "cross_attention_dim": 768, "sample_size": 64}
        ).encode(),
        "unet/diffusion_pytorch_model.safetensors": safetensors_bytes({"unet": ("F32", unet_shape)}, 5),
        "vae/config.json": json.dumps({"_class_name": "AutoencoderKL", "block_out_channels": [1, 2, 3, 4]}).encode(),
        "vae/diffusion_pytorch_model.safetensors": safetensors_bytes({"vae": ("F32", [8])}, 7),
    }
    if fp16:
        files["unet/diffusion_pytorch_model.fp16.safetensors"] = safetensors_bytes({"unet": ("F16", [16])}, 9)
        files["vae/diffusion_pytorch_model.fp16.safetensors"] = safetensors_bytes({"vae": ("F16", [8])}, 11)
    if pickles:
        files["unet/diffusion_pytorch_model.bin"] = b"PK-not-really-a-pickle" * 4
        files["text_encoder/pytorch_model.bin"] = b"PK-not-really-a-pickle" * 2
        files["v1-5-pruned.ckpt"] = b"ckpt" * 16
    if extras:
        files["README.md"] = b"# tiny\n"
        files["unet/diffusion_flax_model.msgpack"] = b"flax" * 8
        files["onnx/unet/model.onnx"] = b"onnx" * 8
        files[".gitattributes"] = b"*.safetensors filter=lfs\n"
    return files
