"""The local Hub stand-in against the real clients: one subprocess runs every check of hub_roundtrip_script.py."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from hub_stand_in import LocalHub

SCRIPT = Path(__file__).resolve().parents[1] / "hub_roundtrip_script.py"


def _request(url, method="GET", body=None, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_resolve_headers_follow_the_hub_protocol(tmp_path):
    with LocalHub(tmp_path) as hub:
        assert hub.endpoint.startswith("http://127.0.0.1:")
        create = json.dumps({"name": "r", "organization": None}).encode()
        assert _request(f"{hub.endpoint}/api/repos/create", "POST", create)[0] == 401  # writes need the token
        status, _, body = _request(f"{hub.endpoint}/api/repos/create", "POST", create, hub.token)
        assert status == 200 and json.loads(body)["url"] == f"{hub.endpoint}/test-user/r"

        line = {"key": "file", "value": {"path": "a/b.txt", "content": "aGVsbG8=", "encoding": "base64"}}
        ndjson = (json.dumps({"key": "header", "value": {"summary": "add"}}) + "\n" + json.dumps(line)).encode()
        status, _, body = _request(f"{hub.endpoint}/api/models/test-user/r/commit/main", "POST", ndjson, hub.token)
        commit = json.loads(body)["commitOid"]

        status, headers, body = _request(hub.url("test-user/r", "a/b.txt"), "HEAD")
        # `git hash-object` of "hello": the ETag of a regular file is its git blob id.
        assert (status, body) == (200, b"")
        assert headers["ETag"] == '"b6fc4c620b67d95f953a5c1c1230aaab5db5a1b0"'
        assert headers["X-Repo-Commit"] == commit and headers["Content-Length"] == "5"
        assert _request(hub.url("test-user/r", "a/b.txt", revision=commit))[2] == b"hello"

        status, headers, _ = _request(hub.url("test-user/r", "missing.txt"))
        assert (status, headers["X-Error-Code"], headers["X-Repo-Commit"]) == (404, "EntryNotFound", commit)
        assert _request(hub.url("test-user/r", "a/b.txt", revision="0" * 40))[1]["X-Error-Code"] == "RevisionNotFound"
        assert _request(hub.url("test-user/nope", "a/b.txt"))[1]["X-Error-Code"] == "RepoNotFound"


def test_hub_roundtrip_script_passes_every_check():
    # The script sets HF_ENDPOINT, HF_HUB_OFFLINE=0 and the rest itself, before it imports huggingface_hub.
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, cwd=SCRIPT.parents[1]
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "FAIL" not in result.stdout, report
    assert result.stdout.count("PASS ") >= 2, report
