"""The fake Ably's own tests: the known-answer vectors (tests/data/vectors.json; which are
Ably's and how the others were checked: docs/ably-protocol.md §1.3, §4.6) and the checks it makes over HTTP. `python3 -m unittest tests/e2e/test_fake_ably.py`."""

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

from fake_ably import AblyError, FakeAbly, allows, matches, parse_capability, token_request_mac

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VECTORS = json.load(open(os.path.join(ROOT, "tests", "data", "vectors.json")))
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

    def test_token_request_checks(self):
        cases = [
            (self.token_request(timestamp=int(time.time() * 1000) - 600_000), 40104),
            (dict(self.token_request(), mac="AAAA"), 40101),
            (self.token_request(nonce="short"), 40000),
            (self.token_request(ttl=0), 40003),
            (self.token_request(ttl=90_000_000), 40003),
            (self.token_request(capability='{"a":["*","publish"]}'), 40000),
            (dict(self.token_request(), extra=1), 40000),
        ]
        for tr, code in cases:
            status, err = self.call("POST", f"/keys/{KEY}/requestToken", tr)
            self.assertEqual(err["error"]["code"], code, tr)

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


if __name__ == "__main__":
    unittest.main()
