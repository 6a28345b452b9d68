"""schemathesis hooks for the whatstat test run (loaded through schemathesis.toml).

An event's `timestamp` is accepted only within a window that moves with the server's
clock: from the state window (or 2000-01-01 with `?backfill=true`) to 5 minutes ahead.
No schema can state a bound that moves, so the description states what is fixed (RFC 3339
with an offset, or Unix seconds from 2000-01-01) and this hook sets the timestamp of every
event in a *positive* (schema-valid) body of `POST /api/events` to the current time, in
the form it was generated in.

Keys and share links are the same kind of rule: `accounts` must name accounts the
organization has (stored state) and `expires_at` must be in the future (the clock). For
schema-valid bodies of `POST /api/keys` and `POST /api/share-links`, this hook names the
organization's accounts as they are at the time (read with `WHATSTAT_TEST_KEY` from
`WHATSTAT_TEST_URL`, both set by scripts/test.sh; none left: the field is left out, all
accounts) and sets `expires_at` to a day from now.

Negative bodies are sent as generated: they must be refused for what makes them invalid.
"""

import json
import os
import urllib.request
from datetime import datetime, timedelta, timezone

import schemathesis
from schemathesis.core.parameters import ParameterLocation


def _now(generated):
    now = datetime.now(timezone.utc)
    if isinstance(generated, str):
        return now.isoformat(timespec="seconds")
    return int(now.timestamp())


def _set_now(event):
    if isinstance(event, dict) and isinstance(event.get("timestamp"), (str, int, float)):
        event["timestamp"] = _now(event["timestamp"])


def _accounts():
    """The organization's accounts now (stateful tests delete some)."""
    request = urllib.request.Request(
        os.environ["WHATSTAT_TEST_URL"] + "/api/accounts",
        headers={"Authorization": "Bearer " + os.environ["WHATSTAT_TEST_KEY"]},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return [a["account_id"] for a in json.load(answer)["data"]["accounts"]]


def _credential(body):
    if not isinstance(body, dict):
        return
    if isinstance(body.get("accounts"), list):
        accounts = _accounts()
        if accounts:
            body["accounts"] = [accounts[i % len(accounts)] for i in range(len(body["accounts"]))]
        else:
            del body["accounts"]
    if isinstance(body.get("expires_at"), str):
        later = datetime.now(timezone.utc) + timedelta(days=1)
        body["expires_at"] = later.isoformat(timespec="seconds")


@schemathesis.hook
def map_case(context, case):
    operation = context.operation
    if operation is None or operation.method.upper() != "POST":
        return case
    meta = case.meta
    if meta is not None and meta.is_negative_at(ParameterLocation.BODY):
        return case
    body = case.body
    if operation.path in ("/api/keys", "/api/share-links"):
        _credential(body)
        return case
    if operation.path != "/api/events":
        return case
    if isinstance(body, list):
        for event in body:
            _set_now(event)
    else:
        _set_now(body)
    return case


@schemathesis.check
def analytics_refuse_valid_requests_only_for_the_range(ctx, response, case):
    """schemathesis.toml lets a schema-valid analytics request be answered 400, because a
    range the kept tiers cannot serve depends on the clock. This holds that 400 to exactly
    that refusal: any other code on a schema-valid request is a finding."""
    if not case.operation.path.startswith("/api/analytics/") or response.status_code != 400:
        return None
    meta = case.meta
    if meta is not None and meta.is_negative_at(ParameterLocation.QUERY):
        return None
    code = response.json().get("code")
    if code != "range_not_servable":
        raise AssertionError(
            f"a schema-valid analytics request was refused with `{code}`, not `range_not_servable`"
        )
    return None
