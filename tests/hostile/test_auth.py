"""With API keys on, hostile requests under /v1 learn nothing without a key, and keys never leak."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Server, ServerFactory
from tests.hostile.wire import Wire

VALID = "valid-key-" + "4" * 24
WRONG = "wrong-key-" + "6" * 24


@pytest.fixture(scope="module")
def secured(server_factory: ServerFactory) -> Server:
    return server_factory("postgres", KV_API_KEYS=f"{VALID},other-key-{'2' * 20}", LOG_LEVEL="INFO")


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("HEAD", "/v1/items/k"),
        ("HEAD", "/v1/items"),
        ("OPTIONS", "/v1/items/k"),
        ("OPTIONS", "/v1/items"),
        ("PROPFIND", "/v1/items/k"),
        ("GET", "/v1"),
        ("GET", "/v1/"),
        ("GET", "/v1/items/"),
        ("GET", "/v1/items/%00"),
        ("GET", "/v1/items/../../healthz"),
        ("GET", "/v1/items?limit=0"),
        ("DELETE", "/v1/nothing/here"),
        ("GET", "/%76%31/items"),
    ],
)
def test_no_v1_answer_without_a_key(secured: Server, method: str, target: str) -> None:
    """Any method on any /v1 path, however malformed, is 401 before routing or validation."""
    response = Wire(secured).request(method, target, [("Authorization", f"Bearer {WRONG}")])
    assert response.status == 401
    assert response.header("www-authenticate") == 'Bearer realm="kvkit"'
    if method != "HEAD":
        response.problem(401, "unauthorized")


@pytest.mark.parametrize(
    "authorization",
    [
        f"Bearer {VALID}x",
        f"Bearer {VALID[:-1]}",
        f"bearer  {VALID} extra",
        "Bearer " + "k" * 100_000,
    ],
    ids=["longer", "shorter", "trailing-junk", "100kb"],
)
def test_near_miss_keys_are_refused(secured: Server, authorization: str) -> None:
    """A key one character off, padded or absurdly long is 401."""
    response = Wire(secured).request("GET", "/v1/items", [("Authorization", authorization)])
    response.problem(401, "unauthorized")


@pytest.mark.parametrize(
    "credentials",
    [
        [("Authorization", f"Bearer {VALID}"), ("X-API-Key", WRONG)],
        [("X-API-Key", WRONG), ("Authorization", f"Bearer {VALID}")],
        [("X-API-Key", VALID), ("Authorization", f"Bearer {WRONG}")],
        [("Authorization", f"Bearer {WRONG}"), ("X-API-Key", VALID)],
        [("X-API-Key", VALID), ("X-API-Key", WRONG)],
        [("Authorization", f"Bearer {WRONG}"), ("Authorization", f"Bearer {VALID}")],
    ],
    ids=[
        "bearer-then-key",
        "key-then-bearer",
        "key-valid",
        "bearer-wrong-first",
        "two-keys",
        "two-bearers",
    ],
)
def test_two_different_credentials_are_refused_in_any_order(
    secured: Server, credentials: list[tuple[str, str]]
) -> None:
    """A valid key beside a wrong one is 401, whichever comes first and in whichever header."""
    Wire(secured).request("GET", "/v1/items", credentials).problem(401, "unauthorized")


def test_the_same_key_twice_is_one_credential(secured: Server) -> None:
    """The same valid key in both headers is accepted."""
    both = [("Authorization", f"Bearer {VALID}"), ("X-API-Key", VALID)]
    assert Wire(secured).request("GET", "/v1/items", both).status == 200


def test_keys_never_reach_logs_metrics_or_bodies(secured: Server) -> None:
    """Neither a valid nor a wrong key appears in any answer, in the log or in /metrics."""
    wire = Wire(secured)
    answers = [
        wire.request(method, target, [(header, value)])
        for method, target in [("GET", "/v1/items/none"), ("PATCH", "/v1/items/k"), ("HEAD", "/v1")]
        for header, value in [("X-API-Key", VALID), ("X-API-Key", WRONG), ("Authorization", VALID)]
    ]
    texts = [answer.body.decode() + str(answer.headers) for answer in answers]
    metrics = httpx.get(secured.url + "/metrics")
    if metrics.status_code == 200:
        texts.append(metrics.text)
    texts.append(secured.log())
    for text in texts:
        assert VALID not in text
        assert WRONG not in text
