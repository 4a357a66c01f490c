"""ably-python (the `ably` PyPI package) against the real capsign and the fake Ably: the core
flow with a cookie jar, in every format (jwt, tokenRequest, token, auto, embedded), and a denied
channel.
Environment: CAPSIGN, ABLY_PORT, SESSION_ALICE. Prints PASS/FAIL lines; exit 1 on a failure."""

import asyncio
import base64
import json
import os
import sys
import traceback
import urllib.error
import urllib.parse
import urllib.request
from importlib.metadata import version

from ably import AblyRest
from ably.util.exceptions import AblyException

CAPSIGN = os.environ["CAPSIGN"]
ABLY_PORT = int(os.environ["ABLY_PORT"])
ALICE = os.environ["SESSION_ALICE"]
LABEL = f"ably-python (ably {version('ably')})"
results = []


class Capsign:
    """Calls capsign's /auth with a cookie jar, as a browser would."""

    def __init__(self, fmt):
        self.fmt = fmt
        # A minimal jar: name -> value from Set-Cookie, sent back as Cookie. (The grant cookie
        # is Secure; browsers send it over plain http to loopback, and so does this jar.)
        self.jar = {}
        self.asked = []

    async def callback(self, token_params):
        query = {"format": self.fmt}
        cap = token_params.get("capability")
        if cap:
            query["capability"] = cap if isinstance(cap, str) else json.dumps(cap)
        self.asked.append(query.get("capability"))
        req = urllib.request.Request(f"{CAPSIGN}/auth?{urllib.parse.urlencode(query)}")
        req.add_header("Authorization", f"Bearer {ALICE}")
        if self.jar:
            req.add_header("Cookie", "; ".join(f"{k}={v}" for k, v in self.jar.items()))
        try:
            with urllib.request.urlopen(req, timeout=10) as res:
                body = res.read().decode()
                is_json = (res.headers.get("Content-Type") or "").startswith("application/json")
                for sc in res.headers.get_all("Set-Cookie") or []:
                    name, _, rest = sc.partition("=")
                    self.jar[name] = rest.split(";", 1)[0]
        except urllib.error.HTTPError as e:
            err = json.loads(e.read())["error"]
            raise AblyException(err["message"], err["statusCode"], err["code"])
        # A TokenRequest or TokenDetails comes as JSON; a JWT (jwt, auto, embedded) as text.
        return json.loads(body) if is_json else body


def held(client):
    td = client.auth.token_details
    if td.capability:
        cap = td.capability
        return json.loads(cap) if isinstance(cap, str) else dict(cap)
    token = td.token
    header = json.loads(b64url_decode(token.split(".")[0]))
    if "x-ably-token" in header:
        # format=embedded: the Ably JWT is inside the app's own.
        token = header["x-ably-token"]
    claims = json.loads(b64url_decode(token.split(".")[1]))
    return json.loads(claims["x-ably-capability"])


def b64url_decode(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def rest(capsign):
    return AblyRest(auth_callback=capsign.callback, rest_host="127.0.0.1", port=ABLY_PORT,
                    tls=False, use_binary_protocol=False)


async def check(name, fn):
    try:
        await asyncio.wait_for(fn(), timeout=20)
        results.append(f"PASS {LABEL}: {name}")
    except Exception:
        results.append(f"FAIL {LABEL}: {name}: {traceback.format_exc()}")


async def main():
    for fmt in ("jwt", "tokenRequest", "token", "auto", "embedded"):
        async def flow(fmt=fmt):
            cs = Capsign(fmt)
            client = rest(cs)
            try:
                await client.auth.authorize({"capability": {"chat:py1": ["publish"]}})
                await client.auth.authorize({"capability": {"doc:py2": ["history", "publish"]}})
                assert json.loads(cs.asked[1]) == {"doc:py2": ["history", "publish"]}, cs.asked
                cap = held(client)
                assert sorted(cap) == ["chat:py1", "doc:py2"], cap
                await client.channels.get("chat:py1").publish("greeting", "hello")
                await client.channels.get("doc:py2").publish("greeting", "hello")
                history = await client.channels.get("doc:py2").history()
                assert len(history.items) >= 1
            finally:
                await client.close()

        async def denied(fmt=fmt):
            client = rest(Capsign(fmt))
            try:
                await client.auth.authorize({"capability": {"chat:py3": ["publish"]}})
                await client.auth.authorize({"capability": {"admin:py": ["publish"]}})
                try:
                    await client.channels.get("admin:py").publish("x", "y")
                    raise AssertionError("publish to admin:py should fail")
                except AblyException as e:
                    assert e.code == 40160, e
                await client.channels.get("chat:py3").publish("x", "y")
            finally:
                await client.close()

        await check(f"{fmt}: one channel, then only a second, publish to both", flow)
        await check(f"{fmt}: a denied channel fails with 40160 while the others work", denied)

    for line in results:
        print(line)
    sys.exit(1 if any(r.startswith("FAIL") for r in results) else 0)


asyncio.run(main())
