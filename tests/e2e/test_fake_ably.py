"""The fake Ably's own tests: the known-answer vectors (tests/data/vectors.json; which are
Ably's and how the others were checked: docs/ably-protocol.md §1.3, §4.6) and the checks it makes over HTTP. `python3 -m unittest tests/e2e/test_fake_ably.py`."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import time
import unittest
import urllib.error
import urllib.request

import aiohttp

from fake_ably import AblyError, FakeAbly, allows, matches, parse_capability, token_request_mac

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VECTORS = json.load(open(os.path.join(ROOT, "tests", "data", "vectors.json")))
SHARED = json.load(open(os.path.join(ROOT, "tests", "data", "fake_ably.json")))
KEY, SECRET = "xVLyHw.mDYnFA", "FAKESECRETfakesecret"


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(claims, secret=SECRET, kid=KEY):
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


class Vectors(unittest.TestCase):
    def test_token_request_macs(self):
        for v in VECTORS["token_request"]:
            tr = {k: v[k] for k in ["keyName", "ttl", "clientId", "timestamp", "nonce"]}
            tr["capability"] = v["capability_canonical"]
            self.assertEqual(token_request_mac(v["secret"], tr), v["mac"], v["id"])

    def test_jwts(self):
        for v in VECTORS["jwt"]:
            fake = FakeAbly({KEY: SECRET})
            for field in ("jwt_alg_typ_kid", "jwt_typ_alg_kid", "jwt"):
                if field in v:
                    cap, client = fake.verify_jwt(v[field], now_s=v["claims"]["iat"])
                    self.assertEqual(client, v["claims"].get("x-ably-clientId"))
                    flipped = v[field][:-2] + ("A" if v[field][-2] != "A" else "B") + v[field][-1]
                    with self.assertRaises(AblyError):
                        fake.verify_jwt(flipped, now_s=v["claims"]["iat"])

    def test_matching(self):
        for pattern, channel, want in [
            ("*", "a", True), ("*", "a:b", True), ("a:*", "a:b", True), ("a:*", "a:b:c", True),
            ("a:*", "a", False), ("a:*:c", "a:b:c", True), ("a:*:c", "a:b:d", False),
            ("[*]*", "x", True), ("[queue]*", "x", False), ("a", "a", True), ("a", "ab", False),
        ]:
            self.assertEqual(matches(pattern, channel), want, (pattern, channel))
        cap = parse_capability('{"chat:*":["publish"],"doc:1":["*"]}')
        self.assertTrue(allows(cap, "chat:x", "publish"))
        self.assertFalse(allows(cap, "chat:x", "history"))
        self.assertTrue(allows(cap, "doc:1", "history"))
        for bad in ['{"a":["*","publish"]}', '{"a":[]}', '{"a":["teleport"]}', "[]", "x"]:
            with self.assertRaises(AblyError):
                parse_capability(bad)


class Http(unittest.TestCase):
    def setUp(self):
        self.fake = FakeAbly({KEY: SECRET})
        self.base = f"http://127.0.0.1:{self.fake.start()}"

    def tearDown(self):
        self.fake.stop()

    def call(self, method, path, body=None, token=None):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + base64.b64encode(token.encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def token_request(self, **over):
        tr = {"keyName": KEY, "ttl": 60000, "capability": '{"chat:*":["publish"]}',
              "clientId": "alice", "timestamp": int(time.time() * 1000),
              "nonce": secrets.token_hex(8)}
        tr.update(over)
        tr["mac"] = token_request_mac(SECRET, tr)
        return tr

    def test_request_token_and_publish(self):
        tr = self.token_request()
        status, details = self.call("POST", f"/keys/{KEY}/requestToken", tr)
        self.assertEqual(status, 200, details)
        self.assertEqual(details["clientId"], "alice")
        status, _ = self.call("POST", "/channels/chat:a/messages", {"name": "n", "data": "d"}, details["token"])
        self.assertEqual(status, 201)
        status, err = self.call("POST", "/channels/doc:a/messages", {"data": "d"}, details["token"])
        self.assertEqual((status, err["error"]["code"]), (401, 40160))
        status, err = self.call("GET", "/channels/chat:a/messages", None, details["token"])
        self.assertEqual((status, err["error"]["code"]), (401, 40160), "no history op")
        # Replay of the same TokenRequest.
        status, err = self.call("POST", f"/keys/{KEY}/requestToken", tr)
        self.assertEqual(err["error"]["code"], 40105)

    def test_shared_token_request_cases(self):
        """The table both fakes answer alike (tests/data/fake_ably.json)."""
        for case in SHARED["token_requests"]:
            tr = {"keyName": KEY, "ttl": 60000, "capability": '{"chat:*":["publish"]}',
                  "clientId": "alice", "timestamp": int(time.time() * 1000) + case.get("timestamp_offset_ms", 0),
                  "nonce": secrets.token_hex(8)}
            for k, v in case.get("set", {}).items():
                if v is None:
                    tr.pop(k, None)
                else:
                    tr[k] = v
            if "mac" not in case:
                tr["mac"] = token_request_mac(SECRET, tr)
            elif case["mac"] is not None:
                tr["mac"] = case["mac"]
            path = f"/keys/{case.get('url_key', KEY)}/requestToken"
            status, body = self.call("POST", path, tr)
            if case.get("replay"):
                status, body = self.call("POST", path, tr)
            with self.subTest(case["name"]):
                self.assertEqual(status, case["status"], body)
                if "code" in case:
                    self.assertEqual(body["error"]["code"], case["code"], body)

    def test_jwt_auth(self):
        now = int(time.time())
        good = jwt({"iat": now, "exp": now + 60, "x-ably-capability": '{"doc:*":["publish","history"]}'})
        self.assertEqual(self.call("POST", "/channels/doc:1/messages", {"data": 1}, good)[0], 201)
        status, msgs = self.call("GET", "/channels/doc:1/messages", None, good)
        self.assertEqual((status, len(msgs)), (200, 1))
        expired = jwt({"iat": now - 120, "exp": now - 60, "x-ably-capability": '{"*":["*"]}'})
        self.assertEqual(self.call("POST", "/channels/doc:1/messages", {}, expired)[1]["error"]["code"], 40142)
        forged = jwt({"iat": now, "exp": now + 60, "x-ably-capability": '{"*":["*"]}'}, secret="wrong")
        self.assertEqual(self.call("POST", "/channels/doc:1/messages", {}, forged)[1]["error"]["code"], 40144)

    def test_chat_rooms_and_user_claims(self):
        now = int(time.time())
        token = jwt({"iat": now, "exp": now + 60, "x-ably-capability": '{"rooms:*":["publish","history"],"feed:*":["publish","history"]}',
                     "ably.room.rooms:*": "any room", "ably.room.rooms:7": "room seven",
                     "ably.channel.feed:*": "a feed"})
        # A room's channel is checked against the room's capability.
        self.assertEqual(self.call("POST", "/channels/rooms:7::$chat/messages", {"data": 1}, token)[0], 201)
        self.assertEqual(self.call("POST", "/channels/rooms:8::$chat/messages", {"data": 1}, token)[0], 201)
        self.assertEqual(self.call("POST", "/channels/other::$chat/messages", {}, token)[1]["error"]["code"], 40160)
        self.assertEqual(self.call("POST", "/channels/feed:x/messages", {"data": 1}, token)[0], 201)
        # The most specific claim is copied onto the message.
        for channel, claim in (("rooms:7::$chat", "room seven"), ("rooms:8::$chat", "any room"), ("feed:x", "a feed")):
            status, msgs = self.call("GET", f"/channels/{channel}/messages", None, token)
            self.assertEqual(msgs[0]["extras"]["userClaim"], claim, channel)

    def test_embedded_jwt(self):
        now = int(time.time())
        inner = jwt({"iat": now, "exp": now + 60, "x-ably-capability": '{"doc:*":["publish"]}'})

        def outer(exp, secret="the app's own secret", where="header"):
            head = {"typ": "JWT", "alg": "HS256"}
            claims = {"iat": now, "exp": exp, "sub": "alice"}
            (head if where == "header" else claims)["x-ably-token"] = inner
            h, b = b64url(json.dumps(head).encode()), b64url(json.dumps(claims).encode())
            sig = hmac.new(secret.encode(), f"{h}.{b}".encode(), hashlib.sha256).digest()
            return f"{h}.{b}.{b64url(sig)}"

        # The inner token is the authority; the outer signature is the app's, not checked.
        for where in ("header", "claim"):
            self.assertEqual(self.call("POST", "/channels/doc:2/messages", {"data": 1}, outer(now + 60, where=where))[0], 201)
        self.assertEqual(self.call("POST", "/channels/doc:2/messages", {}, outer(now + 30, secret="other"))[0], 201)
        # An outer exp later than the inner token's is refused; the inner capability holds.
        self.assertEqual(self.call("POST", "/channels/doc:2/messages", {}, outer(now + 61))[1]["error"]["code"], 40144)
        self.assertEqual(self.call("POST", "/channels/chat:2/messages", {}, outer(now + 60))[1]["error"]["code"], 40160)
        # A native token inside.
        status, details = self.call("POST", f"/keys/{KEY}/requestToken", self.token_request(capability='{"doc:*":["publish"]}'))
        self.assertEqual(status, 200)
        inner = details["token"]  # noqa: F841 (read by outer())
        self.assertEqual(self.call("POST", "/channels/doc:3/messages", {}, outer(details["expires"] // 1000))[0], 201)
        self.assertEqual(self.call("POST", "/channels/doc:3/messages", {}, outer(details["expires"] // 1000 + 1))[1]["error"]["code"], 40144)


class Realtime(unittest.TestCase):
    """The WebSocket side, spoken by hand (ably-js speaks it in the e2e suite)."""

    def setUp(self):
        self.fake = FakeAbly({KEY: SECRET})
        self.port = self.fake.start()

    def tearDown(self):
        self.fake.stop()

    def token(self, cap, client_id="alice"):
        now = int(time.time())
        return jwt({"iat": now, "exp": now + 60, "x-ably-capability": json.dumps(cap), "x-ably-clientId": client_id})

    def run_session(self, token, steps):
        """Connects with `token`, then sends each message of `steps` and reads one answer
        (skipping heartbeats); returns the CONNECTED (or ERROR) and the answers."""
        async def go():
            async with aiohttp.ClientSession() as http:
                url = f"ws://127.0.0.1:{self.port}/?access_token={token}&format=json&v=5"
                async with http.ws_connect(url) as ws:
                    async def read():
                        while True:
                            m = await asyncio.wait_for(ws.receive_json(), 5)
                            if m["action"] != 0:
                                return m
                    first = await read()
                    answers = []
                    for step in steps:
                        await ws.send_json(step)
                        answers.append(await read())
                        if step["action"] == 15 and answers[-1]["action"] == 15:
                            answers.append(await read())  # the echo comes before the ACK
                    return first, answers
        return asyncio.run(go())

    def test_connect_attach_publish_auth(self):
        cap = {"chat:a": ["publish", "subscribe"]}
        wider = self.token({"chat:a": ["publish", "subscribe"], "chat:b": ["presence"]})
        first, answers = self.run_session(self.token(cap), [
            {"action": 10, "channel": "chat:a"},
            {"action": 10, "channel": "chat:b"},
            {"action": 15, "channel": "chat:a", "msgSerial": 0, "messages": [{"name": "n", "data": "d"}]},
            {"action": 15, "channel": "chat:b", "msgSerial": 1, "messages": [{"data": "d"}]},
            {"action": 17, "auth": {"accessToken": wider}},
            {"action": 10, "channel": "chat:b"},
            {"action": 17, "auth": {"accessToken": self.token(cap, client_id="mallory")}},
        ])
        self.assertEqual(first["action"], 4)
        conn = first["connectionId"]
        self.assertEqual(first["connectionDetails"]["clientId"], "alice")
        attached, refused, echoed, ack, nack, reauthed, attached_b, other = answers
        self.assertEqual((attached["action"], attached["flags"] & (1 << 17 | 1 << 18)), (11, 1 << 17 | 1 << 18))
        self.assertEqual((refused["action"], refused["channel"], refused["error"]["code"]), (9, "chat:b", 40160))
        self.assertEqual((echoed["action"], echoed["messages"][0]["clientId"]), (15, "alice"), "delivered before its ACK")
        self.assertEqual((ack["action"], ack["msgSerial"]), (1, 0))
        self.assertEqual((nack["action"], nack["error"]["code"]), (2, 40160))
        self.assertEqual((reauthed["action"], reauthed["connectionId"]), (4, conn), "AUTH keeps the connection")
        self.assertEqual((attached_b["action"], attached_b["flags"] & (1 << 16)), (11, 1 << 16))
        self.assertEqual((other["action"], other["error"]["code"]), (9, 40102))
        self.assertEqual(self.fake.channels["chat:a"][0]["data"], "d")

    def test_a_bad_token_is_an_error_before_connecting(self):
        first, _ = self.run_session(self.token({"*": ["*"]})[:-4] + "AAAA", [])
        self.assertEqual((first["action"], first["error"]["code"]), (9, 40144))


class Revocation(unittest.TestCase):
    """`revokeTokens` as Ably documents it, and revoked tokens refused on REST and Realtime."""

    REV = "revApp.revKey"
    REV_SECRET = "revocable-secret"

    def setUp(self):
        self.fake = FakeAbly({KEY: SECRET, self.REV: self.REV_SECRET}, revocable={self.REV})
        self.port = self.fake.start()
        self.base = f"http://127.0.0.1:{self.port}"

    def tearDown(self):
        self.fake.stop()

    def call(self, method, path, body=None, auth=None):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Content-Type", "application/json")
        if auth:
            req.add_header("Authorization", auth)
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def basic(self, name=None, secret=None):
        raw = f"{name or self.REV}:{secret or self.REV_SECRET}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def bearer(self, token):
        return "Bearer " + base64.b64encode(token.encode()).decode()

    def token(self, client_id="alice", iat=None, key=None, **claims):
        iat = int(time.time()) - 5 if iat is None else iat
        body = {"iat": iat, "exp": iat + 600, "x-ably-capability": '{"*":["*"]}',
                "x-ably-clientId": client_id, **claims}
        return jwt(body, secret=self.REV_SECRET if key is None else SECRET, kid=key or self.REV)

    def publish(self, token):
        status, body = self.call("POST", "/channels/doc:1/messages", {"data": 1}, self.bearer(token))
        return status, body.get("error", {}).get("code") if isinstance(body, dict) else None

    def test_revoke_by_client_id_refuses_older_tokens_only(self):
        old = self.token()
        self.assertEqual(self.publish(old), (201, None))
        now = int(time.time() * 1000)
        status, result = self.call("POST", f"/keys/{self.REV}/revokeTokens",
                                   {"targets": ["clientId:alice", "channel:x"], "issuedBefore": now},
                                   self.basic())
        self.assertEqual(status, 200, result)
        self.assertEqual((result["successCount"], result["failureCount"]), (1, 1))
        ok, refused = result["results"]
        self.assertEqual((ok["target"], ok["issuedBefore"], ok["appliesAt"]), ("clientId:alice", now, ok["appliesAt"]))
        self.assertEqual(refused["target"], "channel:x")
        self.assertIn("error", refused)
        self.assertEqual(self.publish(old), (401, 40141))
        self.assertEqual(self.publish(self.token(iat=now // 1000 + 1)), (201, None), "issued after")
        self.assertEqual(self.publish(self.token(client_id="bob")), (201, None), "another client")
        # A token of a key without revocable tokens is not affected, and that key cannot revoke.
        self.assertEqual(self.publish(self.token(key=KEY)), (201, None))
        status, err = self.call("POST", f"/keys/{KEY}/revokeTokens", {"targets": ["clientId:alice"]},
                                self.basic(KEY, SECRET))
        self.assertEqual((status, err["error"]["code"]), (401, 40163))

    def test_revoke_by_revocation_key_and_the_margin(self):
        group = self.token(client_id="carol", **{"x-ably-revocation-key": "org:acme"})
        status, result = self.call("POST", f"/keys/{self.REV}/revokeTokens",
                                   {"targets": ["revocationKey:org:acme"], "allowReauthMargin": True},
                                   self.basic())
        self.assertEqual(status, 200, result)
        ok = result["results"][0]
        self.assertGreaterEqual(ok["appliesAt"] - ok["issuedBefore"], 29_000)
        self.assertEqual(self.publish(group), (201, None), "not yet: the margin")
        self.fake.time_offset_ms = 31_000
        self.assertEqual(self.publish(group), (401, 40141))
        self.assertEqual(self.publish(self.token(client_id="carol")), (201, None), "no key: not covered")

    def test_bad_revocation_requests(self):
        path = f"/keys/{self.REV}/revokeTokens"
        now = int(time.time() * 1000)
        for body, auth, want in [
            ({"targets": ["clientId:a"]}, self.bearer(self.token()), (401, 40162)),
            ({"targets": ["clientId:a"]}, self.basic(secret="wrong"), (401, 40101)),
            ({"targets": []}, self.basic(), (400, 40000)),
            ({"targets": ["clientId:a"], "issuedBefore": now + 60_000}, self.basic(), (400, 40003)),
            ({"targets": ["clientId:a"], "issuedBefore": now - 7200_000}, self.basic(), (400, 40003)),
        ]:
            status, err = self.call("POST", path, body, auth)
            self.assertEqual((status, err["error"]["code"]), want, body)

    def test_a_revoked_connection_is_disconnected_with_40141(self):
        token = self.token()

        async def go():
            async with aiohttp.ClientSession() as http:
                url = f"ws://127.0.0.1:{self.port}/?access_token={token}&format=json&v=5"
                async with http.ws_connect(url) as ws:
                    first = await asyncio.wait_for(ws.receive_json(), 5)
                    await asyncio.get_running_loop().run_in_executor(None, lambda: self.call(
                        "POST", f"/keys/{self.REV}/revokeTokens", {"targets": ["clientId:alice"]}, self.basic()))
                    while True:
                        m = await asyncio.wait_for(ws.receive_json(), 5)
                        if m["action"] != 0:
                            return first, m
        first, m = asyncio.run(go())
        self.assertEqual(first["action"], 4)
        self.assertEqual((m["action"], m["error"]["code"]), (6, 40141))


if __name__ == "__main__":
    unittest.main()
