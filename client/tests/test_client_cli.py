"""The `kv` command line against the fault server: output, errors and exit codes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import kvclient
from kvclient._cli import main

if TYPE_CHECKING:
    from conftest import FaultServer


@pytest.fixture(autouse=True)
def _kv_env(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the command at the fault server through KV_URL, as a user would."""
    monkeypatch.setenv("KV_URL", server.url)
    monkeypatch.delenv("KV_API_KEY", raising=False)


def test_put_creates_a_missing_key_and_prints_it(
    server: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """`kv put` on a new key creates it and prints the item as JSON."""
    assert main(["put", "color", '{"name": "blue"}']) == 0
    printed = json.loads(capsys.readouterr().out)
    assert (printed["key"], printed["value"], printed["version"]) == ("color", {"name": "blue"}, 1)
    assert [r.method for r in server.requests] == ["PUT", "POST"]


def test_put_updates_an_existing_key(capsys: pytest.CaptureFixture[str]) -> None:
    """`kv put` on an existing key updates it in one request."""
    assert main(["put", "n", "1"]) == 0
    assert main(["put", "n", "2"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert json.loads(last)["version"] == 2


def test_get_prints_the_item(capsys: pytest.CaptureFixture[str]) -> None:
    """`kv get` prints the stored item as one JSON document and exits 0."""
    main(["put", "k", "[1, 2]"])
    capsys.readouterr()
    assert main(["get", "k"]) == 0
    assert json.loads(capsys.readouterr().out)["value"] == [1, 2]


def test_missing_key_exits_1_with_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`kv get` of a missing key exits 1 and explains on exactly one stderr line."""
    assert main(["get", "nope"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1
    assert "not_found" in captured.err


def test_del_removes_the_key(server: FaultServer) -> None:
    """`kv del` deletes the item and exits 0; deleting it again exits 1."""
    main(["put", "k", "1"])
    assert main(["del", "k"]) == 0
    assert "k" not in server.kv.items
    assert main(["del", "k"]) == 1


def test_ls_prints_one_item_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    """`kv ls --prefix --limit` prints matching items in key order, at most `limit` of them."""
    for key in ("a3", "a1", "b1", "a2"):
        main(["put", key, "0"])
    capsys.readouterr()
    assert main(["ls", "--prefix", "a", "--limit", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a1", "a2"]
    assert main(["ls"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4


def test_api_key_comes_from_the_environment(
    server: FaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KV_API_KEY is sent as a bearer token; without it the service refuses (exit 1)."""
    server.kv.api_key = "k3y"
    assert main(["get", "x"]) == 1
    monkeypatch.setenv("KV_API_KEY", "k3y")
    main(["get", "x"])
    assert server.requests[-1].headers.get("Authorization") == "Bearer k3y"


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["get"], ["put", "k", "{not json"], ["ls", "--limit", "0"], ["get", ""]],
    ids=["no-command", "unknown-command", "missing-key", "bad-json", "bad-limit", "empty-key"],
)
def test_usage_errors_exit_2(
    argv: list[str], server: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Malformed command lines exit 2 without sending anything."""
    assert main(argv) == 2
    assert capsys.readouterr().err
    assert server.requests == []


def test_unavailable_service_exits_3(
    server: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 503 that outlasts the retries exits 3."""
    server.problem(503, "service_unavailable", times=None)
    assert main(["--max-attempts", "1", "get", "k"]) == 3
    assert "service_unavailable" in capsys.readouterr().err


def test_unreachable_service_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    """A refused connection exits 3."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["--url", f"http://127.0.0.1:{port}", "--max-attempts", "1", "get", "k"]) == 3
    assert "connect error" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """`kv --help` prints usage and exits 0."""
    assert main(["--help"]) == 0
    assert "KV_URL" in capsys.readouterr().out


def test_python_dash_m_runs_the_same_command(server: FaultServer) -> None:
    """`python -m kvclient` is the `kv` command."""
    env = {**os.environ, "PYTHONPATH": str(Path(kvclient.__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-m", "kvclient", "get", "absent"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "not_found" in result.stderr


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`kv --version` prints the version and exits 0."""
    assert main(["--version"]) == 0
    assert kvclient.__version__ in capsys.readouterr().out


def test_create_only_creates(server: FaultServer, capsys: pytest.CaptureFixture[str]) -> None:
    """`kv create` stores a new key and exits 1 when the key already exists."""
    assert main(["create", "fresh", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    assert main(["create", "fresh", "2"]) == 1
    assert "key_exists" in capsys.readouterr().err
    assert server.kv.items["fresh"]["value"] == 1


def test_if_version_guards_put_and_del(server: FaultServer) -> None:
    """`--if-version` sends If-Match: a stale version exits 1 and changes nothing."""
    main(["put", "k", "1"])
    assert main(["put", "--if-version", "9", "k", "2"]) == 1
    assert main(["put", "--if-version", "1", "k", "2"]) == 0
    assert server.requests[-1].headers.get("If-Match") == '"1"'
    assert main(["del", "--if-version", "1", "k"]) == 1
    assert main(["del", "--if-version", "2", "k"]) == 0
    assert "k" not in server.kv.items


def test_put_if_version_never_creates(server: FaultServer) -> None:
    """A conditional put of a missing key exits 1 instead of creating it."""
    assert main(["put", "--if-version", "1", "absent", "1"]) == 1
    assert "absent" not in server.kv.items


@pytest.mark.parametrize(
    "argv",
    [
        ["--url", "127.0.0.1:8000", "get", "k"],
        ["--url", "localhost", "get", "k"],
        ["put", "k", "NaN"],
        ["put", "k", '{"n": Infinity}'],
        ["--timeout", "0", "get", "k"],
        ["--timeout", "soon", "get", "k"],
    ],
    ids=["url-without-scheme", "bare-host", "nan", "infinity", "zero-timeout", "bad-timeout"],
)
def test_bad_url_value_or_timeout_exits_2(
    argv: list[str], server: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad URL, a value JSON cannot carry or a bad timeout is a usage error: exit 2, unsent."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err and "Traceback" not in err
    assert server.requests == []


def test_timeout_bounds_each_call(server: FaultServer, capsys: pytest.CaptureFixture[str]) -> None:
    """`--timeout` is the deadline of a call: a stalled service gives up after it (exit 3)."""
    server.stall(5.0, times=None)
    started = time.monotonic()
    assert main(["--timeout", "0.5", "get", "k"]) == 3
    assert time.monotonic() - started < 2.0
    assert "read timeout" in capsys.readouterr().err


def test_broken_pipe_ends_quietly(server: FaultServer) -> None:
    """`kv ls | head -1` stops without a traceback when the reader goes away."""
    now = "2025-01-01T00:00:00Z"
    for n in range(3000):
        key = f"item{n:05d}"
        server.kv.items[key] = {
            "key": key,
            "value": "x" * 40,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
    env = {**os.environ, "PYTHONPATH": str(Path(kvclient.__file__).parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-m", "kvclient", "ls"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert json.loads(process.stdout.readline())["key"] == "item00000"
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=30) == 141
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr
