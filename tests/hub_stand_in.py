"""A local stand-in for the Hugging Face Hub HTTP API, for tests that push to and load from "the Hub" offline.

It speaks the subset of the Hub protocol that the real `huggingface_hub` client (2.x) uses for model, dataset and
space repos: `create_repo` / `delete_repo`, `whoami`, `upload_folder` / `create_commit` (the preupload endpoint
answers `"regular"` for every file, so neither LFS nor Xet is needed: file bytes travel base64-encoded in the
commit), `model_info` / `repo_info` (siblings, sha), `list_repo_tree` / `list_repo_files`, `get_paths_info`, and
`hf_hub_download` / `snapshot_download` (HEAD and GET on `/{repo_id}/resolve/{revision}/{path}` with the `ETag`,
`X-Repo-Commit` and `Content-Length` headers the client requires, and the Hub's `X-Error-Code` headers on 404s).

Only the standard library is used. The server binds to 127.0.0.1 only. Repos live under `root`: content-addressed
blobs plus one JSON file per repo holding its commits; the branch `main` is the only ref.

The client reads `HF_ENDPOINT` once, at import, so a process must start the hub before importing `huggingface_hub`:

```py
with LocalHub(tmp_path / "hub") as hub:
    os.environ.update(HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0", HF_TOKEN=hub.token)
    import huggingface_hub  # noqa: E402
```
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

LOOPBACK = "127.0.0.1"
REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
INITIAL_GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
)


class HubError(Exception):
    """An error answered to the client: HTTP status plus the Hub's `X-Error-Code` (empty when the Hub sends none)."""

    def __init__(self, status: int, message: str, code: str = "", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def git_blob_oid(content: bytes) -> str:
    """The git object id of a blob, which the Hub uses as ETag and `oid` of regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _now() -> str:
    # The client's `parse_datetime` expects exactly this shape: 2024-01-31T12:00:00.000Z
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class RepoStore:
    """Repos on disk. Every method takes the store lock, so handler threads see whole commits only."""

    def __init__(self, root: Path):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    def _record_path(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / repo_type / f"{repo_id}.json"

    def _load(self, repo_type: str, repo_id: str) -> dict:
        path = self._record_path(repo_type, repo_id)
        if not path.is_file():
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return json.loads(path.read_text())

    def _save(self, repo_type: str, repo_id: str, record: dict) -> None:
        path = self._record_path(repo_type, repo_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1))
        tmp.replace(path)

    def _put_blob(self, content: bytes) -> str:
        oid = git_blob_oid(content)
        blob = self.root / "blobs" / oid
        if not blob.exists():
            blob.write_bytes(content)
        return oid

    def read_blob(self, oid: str) -> bytes:
        return (self.root / "blobs" / oid).read_bytes()

    def blob_size(self, oid: str) -> int:
        return (self.root / "blobs" / oid).stat().st_size

    def exists(self, repo_type: str, repo_id: str) -> bool:
        return self._record_path(repo_type, repo_id).is_file()

    def create(self, repo_type: str, repo_id: str, private: bool) -> None:
        with self.lock:
            if self.exists(repo_type, repo_id):
                raise HubError(409, "You already created this model repo", "")
            date = _now()
            record = {"private": private, "created_at": date, "head": None, "commits": {}}
            self._commit(record, {".gitattributes": self._put_blob(INITIAL_GITATTRIBUTES)}, "initial commit", date)
            self._save(repo_type, repo_id, record)

    def delete(self, repo_type: str, repo_id: str) -> None:
        with self.lock:
            if not self.exists(repo_type, repo_id):
                raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
            self._record_path(repo_type, repo_id).unlink()

    def record(self, repo_type: str, repo_id: str) -> dict:
        with self.lock:
            return self._load(repo_type, repo_id)

    @staticmethod
    def resolve(record: dict, revision: str) -> str:
        """The commit oid that `revision` (branch `main`, a full oid, or an oid prefix of 7+ characters) names."""
        if revision == "main":
            return record["head"]
        matches = [oid for oid in record["commits"] if len(revision) >= 7 and oid.startswith(revision.lower())]
        if len(matches) != 1:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return matches[0]

    @staticmethod
    def _commit(record: dict, files: dict[str, str], message: str, date: str) -> str:
        parent = record["head"]
        body = json.dumps({"parent": parent, "files": files, "message": message, "date": date}, sort_keys=True)
        oid = hashlib.sha1(body.encode()).hexdigest()
        record["commits"][oid] = {"parent": parent, "files": files, "message": message, "date": date}
        record["head"] = oid
        return oid

    def commit(self, repo_type: str, repo_id: str, operations: list[dict], message: str, parent: str | None) -> str:
        """Applies `file` / `deletedFile` / `deletedFolder` operations (the client's ndjson lines) on top of `main`."""
        with self.lock:
            record = self._load(repo_type, repo_id)
            if parent is not None and not record["head"].startswith(parent.lower()):
                raise HubError(412, f"Parent commit {parent} is not the head of main ({record['head']})", "")
            files = dict(record["commits"][record["head"]]["files"])
            for op in operations:
                key, value = op["key"], op["value"]
                path = value["path"]
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"Unsupported encoding {value.get('encoding')!r} for {path}")
                    files[path] = self._put_blob(base64.b64decode(value["content"]))
                elif key == "deletedFile":
                    if files.pop(path, None) is None:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    files = {p: oid for p, oid in files.items() if not p.startswith(prefix)}
                else:
                    raise HubError(
                        400, f"Operation {key!r} is not supported by the local hub (it asks for regular uploads)"
                    )
            oid = self._commit(record, files, message, _now())
            self._save(repo_type, repo_id, record)
            return oid


def _tree_entries(store: RepoStore, files: dict[str, str]) -> dict[str, dict]:
    """Every file and every directory of a commit, keyed by path, in the Hub's tree-entry format."""
    entries: dict[str, dict] = {}
    for path, oid in files.items():
        entries[path] = {"type": "file", "oid": oid, "size": store.blob_size(oid), "path": path}
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            entries.setdefault(folder, {"type": "directory", "oid": "", "size": 0, "path": folder})
    for folder, entry in entries.items():
        if entry["type"] == "directory":
            listing = "".join(f"{p}:{o}\n" for p, o in sorted(files.items()) if p.startswith(folder + "/"))
            entry["oid"] = hashlib.sha1(listing.encode()).hexdigest()
    return entries


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response below carries a Content-Length
    server: _HubServer

    # -- plumbing ------------------------------------------------------------------------------------------------

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip(), 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, headers: dict[str, str], content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers or {}, "application/json")

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return self.server.hub.user if auth == f"Bearer {self.server.hub.token}" else None

    def _require_user(self) -> str:
        if self._user() is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.server.hub.user

    def _readable_record(self, repo_type: str, repo_id: str) -> dict:
        record = self.server.store.record(repo_type, repo_id)
        if record["private"] and self._user() is None:
            raise HubError(401, f"Repository {repo_id} not found", "RepoNotFound")  # as the Hub: no leak
        return record

    def _dispatch(self) -> None:
        self.server.hub.log_request(self.command, self.path)
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        # Split before unquoting: a revision may contain "/" only as %2F.
        segments = [unquote(s) for s in url.path.strip("/").split("/")]
        try:
            if segments[0] == "api":
                self._route_api(segments[1:])
            else:
                self._route_resolve(segments)
        except HubError as error:
            headers = {"X-Error-Message": error.message, **error.headers}
            if error.code:
                headers["X-Error-Code"] = error.code
            self._send_json({"error": error.message}, error.status, headers)

    do_GET = do_HEAD = do_POST = do_DELETE = do_PUT = _dispatch

    # -- routes --------------------------------------------------------------------------------------------------

    def _route_api(self, seg: list[str]) -> None:
        method = self.command
        if seg == ["whoami-v2"] and method == "GET":
            name = self._require_user()
            auth = {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}}
            return self._send_json({"type": "user", "name": name, "fullname": name, "orgs": [], "auth": auth})
        if seg == ["validate-yaml"] and method == "POST":
            self._body()
            return self._send_json({"errors": [], "warnings": []})
        if seg == ["repos", "create"] and method == "POST":
            return self._create_repo(json.loads(self._body() or b"{}"))
        if seg == ["repos", "delete"] and method == "DELETE":
            payload = json.loads(self._body() or b"{}")
            self._require_user()
            repo_id = f"{payload.get('organization') or self.server.hub.user}/{payload['name']}"
            self.server.store.delete(payload.get("type") or "model", repo_id)
            return self._send_json({})
        if len(seg) >= 3 and seg[0] in REPO_TYPES:
            repo_type, repo_id, rest = REPO_TYPES[seg[0]], f"{seg[1]}/{seg[2]}", seg[3:]
            if not rest and method == "GET":
                return self._repo_info(repo_type, repo_id, "main")
            if len(rest) == 2 and rest[0] == "revision" and method == "GET":
                return self._repo_info(repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
                return self._preupload(repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "commit" and method == "POST":
                return self._commit(repo_type, repo_id, rest[1])
            if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
                return self._tree(repo_type, repo_id, rest[1], "/".join(rest[2:]))
            if len(rest) == 2 and rest[0] == "paths-info" and method == "POST":
                return self._paths_info(repo_type, repo_id, rest[1])
        raise HubError(404, f"{method} {self.path} is not served by the local hub")

    def _route_resolve(self, seg: list[str]) -> None:
        repo_type = REPO_TYPES.get(seg[0]) if seg[0] in ("datasets", "spaces") else "model"
        if repo_type != "model":
            seg = seg[1:]
        if len(seg) < 5 or seg[2] != "resolve" or self.command not in ("GET", "HEAD"):
            raise HubError(404, f"{self.command} {self.path} is not served by the local hub")
        repo_id, revision, path = f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:])
        record = self._readable_record(repo_type, repo_id)
        commit_oid = self.server.store.resolve(record, revision)
        oid = record["commits"][commit_oid]["files"].get(path)
        if oid is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit_oid})
        headers = {"ETag": f'"{oid}"', "X-Repo-Commit": commit_oid, "Accept-Ranges": "none"}
        self._send(200, self.server.store.read_blob(oid), headers, "application/octet-stream")

    def _create_repo(self, payload: dict) -> None:
        user = self._require_user()
        repo_type = payload.get("type") or "model"
        if repo_type not in URL_PREFIXES:
            raise HubError(400, f"Repo type {repo_type!r} is not supported by the local hub")
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
        self.server.store.create(repo_type, repo_id, private)
        url = f"{self.server.hub.endpoint}/{URL_PREFIXES[repo_type]}{repo_id}"
        self._send_json({"url": url, "name": repo_id, "id": repo_id})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        record = self._readable_record(repo_type, repo_id)
        commit_oid = self.server.store.resolve(record, revision)
        commit = record["commits"][commit_oid]
        with_blobs = self.query.get("blobs", ["False"])[0].lower() == "true"
        siblings = []
        for path, oid in sorted(commit["files"].items()):
            sibling = {"rfilename": path}
            if with_blobs:
                sibling.update(size=self.server.store.blob_size(oid), blobId=oid)
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit_oid,
            "lastModified": commit["date"],
            "createdAt": record["created_at"],
            "private": record["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        self._send_json(info)

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        self._require_user()
        record = self._readable_record(repo_type, repo_id)
        files = record["commits"][self.server.store.resolve(record, revision)]["files"]
        payload = json.loads(self._body())
        answer = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": files.get(f["path"])}
            for f in payload["files"]
        ]
        self._send_json({"files": answer, "commitOid": record["head"]})

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        self._require_user()
        if self.query.get("create_pr", ["0"])[0] == "1":
            raise HubError(400, "Pull requests are not supported by the local hub")
        if revision != "main":
            raise HubError(400, f"The local hub has only the branch main; got revision {revision!r}")
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line["key"] == "header"), {})
        operations = [line for line in lines if line["key"] != "header"]
        message = header.get("summary", "")
        if header.get("description"):
            message += "\n\n" + header["description"]
        oid = self.server.store.commit(repo_type, repo_id, operations, message, header.get("parentCommit"))
        commit_url = f"{self.server.hub.endpoint}/{URL_PREFIXES[repo_type]}{repo_id}/commit/{oid}"
        self._send_json({"success": True, "commitOid": oid, "commitUrl": commit_url, "pullRequestUrl": None})

    def _tree(self, repo_type: str, repo_id: str, revision: str, folder: str) -> None:
        record = self._readable_record(repo_type, repo_id)
        files = record["commits"][self.server.store.resolve(record, revision)]["files"]
        entries = _tree_entries(self.server.store, files)
        if folder and entries.get(folder, {}).get("type") != "directory":
            raise HubError(404, f"Folder {folder} not found", "EntryNotFound")
        prefix = folder + "/" if folder else ""
        recursive = self.query.get("recursive", ["False"])[0].lower() == "true"
        listed = [
            entry
            for path, entry in sorted(entries.items())
            if path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])
        ]
        self._send_json(listed)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        record = self._readable_record(repo_type, repo_id)
        files = record["commits"][self.server.store.resolve(record, revision)]["files"]
        entries = _tree_entries(self.server.store, files)
        body = self._body().decode()
        content_type = self.headers.get("Content-Type", "")
        paths = json.loads(body)["paths"] if "json" in content_type else parse_qs(body).get("paths", [])
        self._send_json([entries[p] for p in paths if p in entries])


class _HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, hub: LocalHub, port: int):
        self.hub, self.store = hub, hub.store
        super().__init__((LOOPBACK, port), _Handler)


class LocalHub:
    """A Hub stand-in served on 127.0.0.1 from a background thread.

    Args:
        root (`str` or `os.PathLike`):
            Folder that holds the repos (created if missing); a temporary folder in tests.
        port (`int`, defaults to 0):
            TCP port on 127.0.0.1; 0 picks a free one.
        user (`str`, defaults to `"test-user"`):
            The account that `token` authenticates; the namespace of repos created without one.
        token (`str`, defaults to `"hf_test"`):
            The only valid token. Writes need it; reads of public repos do not; private repos answer 401 without it.
    """

    def __init__(self, root, port: int = 0, user: str = "test-user", token: str = "hf_test"):
        self.store = RepoStore(Path(root))
        self.user, self.token = user, token
        self.requests: list[tuple[str, str]] = []
        self._requests_lock = threading.Lock()
        self._server = _HubServer(self, port)
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The value for `HF_ENDPOINT`, e.g. `http://127.0.0.1:38471`."""
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def url(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> str:
        """The resolve URL of a file, as the client builds it."""
        return f"{self.endpoint}/{URL_PREFIXES[repo_type]}{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"

    def log_request(self, method: str, path: str) -> None:
        with self._requests_lock:
            self.requests.append((method, path))

    def start(self) -> LocalHub:
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
