"""Values come back exactly as stored: integers of any size, doubles bit for bit, on every backend.

Responses are read with the standard library's parser, which keeps integers exact and reads
numbers with a fraction or exponent as doubles, so a changed digit or type shows.
"""

from __future__ import annotations

import json
import math
import uuid

import httpx
import pytest

JSON = {"Content-Type": "application/json"}
MAX_DIGITS = 4300  # Python's limit on int <-> str conversion, which the service keeps

INTEGERS = {
    "2**64+1": "18446744073709551617",
    "30-digits": "123456789012345678901234567890",
    "below-i64": str(-(2**63) - 1),
    "10**400": "1" + "0" * 400,
    "4300-digits": "9" * MAX_DIGITS,
    "negative-4300-digits": "-" + "7" * MAX_DIGITS,
}
DOUBLES = {"1.0": 1.0, "1e300": 1e300, "-0.0": -0.0, "5e-324": 5e-324}


def _post(client: httpx.Client, key: str, literal: str, **headers: str) -> httpx.Response:
    body = f'{{"key": "{key}", "value": {{"n": {literal}, "list": [{literal}]}}}}'
    return client.post("/v1/items", content=body, headers={**JSON, **headers})


def _values(client: httpx.Client, key: str, created: httpx.Response) -> list[object]:
    """The value as the create, a read, a page and a PUT of the same text answer it."""
    read = client.get(f"/v1/items/{key}")
    (listed,) = json.loads(client.get("/v1/items", params={"prefix": key}).text)["items"]
    text = json.dumps(json.loads(created.text)["value"])  # re-sent as the client received it
    put = client.put(f"/v1/items/{key}", content=f'{{"value": {text}}}', headers=JSON)
    assert (created.status_code, read.status_code, put.status_code) == (201, 200, 200)
    return [json.loads(r.text)["value"] for r in (created, read, put)] + [listed["value"]]


@pytest.mark.parametrize("literal", INTEGERS.values(), ids=INTEGERS.keys())
def test_integers_of_any_size_round_trip_exactly(
    api: httpx.Client, keyspace: str, literal: str
) -> None:
    """An integer wider than 64 bits is returned digit for digit, never as a nearby double."""
    key = keyspace + "int"
    for value in _values(api, key, _post(api, key, literal)):
        assert value == {"n": int(literal), "list": [int(literal)]}
        assert type(value["n"]) is int  # type: ignore[index]


@pytest.mark.parametrize("literal", list(DOUBLES), ids=list(DOUBLES))
def test_doubles_round_trip_bit_for_bit(api: httpx.Client, keyspace: str, literal: str) -> None:
    """1.0 stays a double, -0.0 keeps its sign, 1e300 and 5e-324 are the same doubles."""
    key = keyspace + "dbl"
    expected = DOUBLES[literal]
    for value in _values(api, key, _post(api, key, literal)):
        for number in (value["n"], value["list"][0]):  # type: ignore[index]
            assert type(number) is float
            assert number == expected and math.copysign(1, number) == math.copysign(1, expected)


@pytest.mark.parametrize("literal", [INTEGERS["2**64+1"], INTEGERS["4300-digits"], "-0.0"])
def test_replays_return_the_exact_value_too(api: httpx.Client, keyspace: str, literal: str) -> None:
    """An Idempotency-Key replay carries the first answer's bytes, exact digits included."""
    key, idem = keyspace + "replay", uuid.uuid4().hex
    first = _post(api, key, literal, **{"Idempotency-Key": idem})
    again = _post(api, key, literal, **{"Idempotency-Key": idem})
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert f'"n":{literal}'.encode() in again.content


def test_an_integer_too_long_to_keep_is_refused_and_nothing_is_stored(
    api: httpx.Client, keyspace: str
) -> None:
    """One digit past the limit is a 422 that says why; the key stays free."""
    key = keyspace + "long"
    response = _post(api, key, "1" * (MAX_DIGITS + 1))
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert f"at most {MAX_DIGITS} digits" in response.json()["detail"]
    assert api.get(f"/v1/items/{key}").status_code == 404


def test_member_order_and_text_come_back_as_sent(api: httpx.Client, keyspace: str) -> None:
    """Object members keep their order; strings and escapes come back as the same characters."""
    key = keyspace + "order"
    value = {"z": 1, "a": [True, None, "é\u2028\U0001f600"], "m": {"b": 2, "a": 1}}
    created = api.post("/v1/items", json={"key": key, "value": value})
    assert created.status_code == 201
    read = json.loads(api.get(f"/v1/items/{key}").text)["value"]
    assert read == value and list(read) == ["z", "a", "m"] and list(read["m"]) == ["b", "a"]
