"""A fake of Ably's REST API for capsign's end-to-end tests, on 127.0.0.1 only.

It checks what Ably checks, as `docs/ably-protocol.md` describes it:

- `POST /keys/{keyName}/requestToken`: a signed TokenRequest, exactly the seven fields; the
  MAC over the newline-terminated sign text (constant-time compare); nonce at least 16
  characters and never seen before (40105); timestamp within two minutes (40104); ttl within
  (0, 24 h] (40003); a capability in Ably's grammar (40000). Issues an opaque token.
- `POST|GET /channels/{name}/messages` (publish, history), authenticated by such a token or by
  an Ably JWT (HS256 under the key its `kid` names, `iat` and `exp` checked), the capability
  enforced with Ably's wildcard rules: 401/40160 when it does not allow the operation there.
- `GET /time`, and CORS for the browser test.

Run alone: `python3 fake_ably.py` prints `fake-ably: listening on http://127.0.0.1:PORT`.
"""

import base64
import hashlib
import hmac
import json
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OPERATIONS = {
    "annotation-publish", "annotation-subscribe", "channel-metadata", "history",
    "message-delete-any", "message-delete-own", "message-update-any", "message-update-own",
    "object-publish", "object-subscribe", "presence", "publish", "push-admin", "push-subscribe",
    "stats", "subscribe", "privileged-headers",
}
TR_FIELDS = ["keyName", "ttl", "capability", "clientId", "timestamp", "nonce", "mac"]
MAX_TTL_MS = 24 * 3600 * 1000
WINDOW_MS = 2 * 60 * 1000


class AblyError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def now_ms():
    return int(time.time() * 1000)


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def sign_text(tr):
    """The TokenRequest sign text: six fields, each followed by a line feed; absent is empty."""
    def field(k):
        v = tr.get(k)
        return "" if v is None else str(v)
    return "".join(field(k) + "\n" for k in TR_FIELDS[:-1])


def token_request_mac(secret, tr):
    digest = hmac.new(secret.encode(), sign_text(tr).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def parse_capability(text):
    """Ably's capability grammar; returns {resource: set(ops)} or raises 40000."""
    try:
        cap = json.loads(text)
    except (TypeError, ValueError):
        raise AblyError(400, 40000, "capability is not JSON")
    if not isinstance(cap, dict) or not cap:
        raise AblyError(400, 40000, "capability must be a non-empty object")
    out = {}
    for resource, ops in cap.items():
        if not resource or not isinstance(ops, list) or not ops:
            raise AblyError(400, 40000, f"invalid capability for {resource!r}")
        if "*" in ops and len(ops) > 1:
            raise AblyError(400, 40000, "'*' must be the only operation")
        for op in ops:
            if op != "*" and op not in OPERATIONS:
                raise AblyError(400, 40000, f"unknown operation {op!r}")
        out[resource] = set(ops)
    return out


def matches(pattern, channel):
    """Ably's matching of a (plain) channel name by a resource pattern."""
    qualifier, rest = "", pattern
    if pattern.startswith("["):
        qualifier, _, rest = pattern[1:].partition("]")
        if qualifier not in ("*", "queue", "meta"):
            return False
    if qualifier not in ("", "*"):
        return False  # queues and metachannels are not channels
    p, c = rest.split(":"), channel.split(":")

    def segs(p, c):
        if not p:
            return not c
        if p == ["*"]:
            return len(c) >= 1
        if not c:
            return False
        return (p[0] == "*" or p[0] == c[0]) and segs(p[1:], c[1:])

    return segs(p, c)


def allows(capability, channel, op):
    return any(
        matches(r, channel) and ("*" in ops or op in ops) for r, ops in capability.items()
    )


CHAT_SUFFIX = "::$chat"


def user_claim(user_claims, channel, room):
    """The user claim Ably copies onto a message: of `ably.room.<pattern>` claims for a Chat
    room's channel, `ably.channel.<pattern>` otherwise; the most specific match (an exact name,
    else the pattern with the most literal characters)."""
    prefix, name = ("ably.room.", room) if room is not None else ("ably.channel.", channel)
    best = None
    for key, value in user_claims.items():
        if not key.startswith(prefix):
            continue
        pattern = key[len(prefix):]
        if pattern == name:
            return value
        if matches(pattern, name):
            score = len(pattern.replace("*", ""))
            if best is None or score > best[0]:
                best = (score, value)
    return best[1] if best else None


class FakeAbly:
    def __init__(self, keys, time_offset_ms=0):
        """`keys`: {keyName: secret}."""
        self.keys = dict(keys)
        self.time_offset_ms = time_offset_ms
        self.tokens = {}
        self.nonces = set()
        self.channels = {}
        self.requests = []
        self.lock = threading.Lock()
        self.server = None

    def now(self):
        return now_ms() + self.time_offset_ms

    # ----- the checks -----

    def request_token(self, key_name, tr):
        if not isinstance(tr, dict):
            raise AblyError(400, 40000, "TokenRequest must be an object")
        extra = set(tr) - set(TR_FIELDS)
        if extra:
            raise AblyError(400, 40000, f"unexpected TokenRequest fields {sorted(extra)}")
        if tr.get("keyName") != key_name:
            raise AblyError(400, 40000, "keyName does not match the URL")
        secret = self.keys.get(key_name)
        if secret is None:
            raise AblyError(401, 40400, "No application found with id")
        mac = tr.get("mac")
        if not isinstance(mac, str) or not hmac.compare_digest(
            mac.encode(), token_request_mac(secret, tr).encode()
        ):
            raise AblyError(401, 40101, "Invalid mac")
        nonce = tr.get("nonce")
        if not isinstance(nonce, str) or len(nonce) < 16:
            raise AblyError(400, 40000, "nonce must be at least 16 characters")
        ts = tr.get("timestamp")
        if not isinstance(ts, int) or abs(ts - self.now()) > WINDOW_MS:
            raise AblyError(401, 40104, "Timestamp not current")
        ttl = tr.get("ttl", 3600 * 1000)
        if not isinstance(ttl, int) or not 0 < ttl <= MAX_TTL_MS:
            raise AblyError(400, 40003, "invalid ttl")
        cap_text = tr.get("capability") or '{"*":["*"]}'
        capability = parse_capability(cap_text)
        with self.lock:
            if nonce in self.nonces:
                raise AblyError(401, 40105, "Nonce value replayed")
            self.nonces.add(nonce)
            token = f"{key_name.split('.')[0]}.{secrets.token_urlsafe(24)}"
            issued = self.now()
            self.tokens[token] = {
                "capability": capability,
                "clientId": tr.get("clientId"),
                "expires": issued + ttl,
            }
        details = {
            "token": token,
            "keyName": key_name,
            "issued": issued,
            "expires": issued + ttl,
            "capability": cap_text,
        }
        if tr.get("clientId") is not None:
            details["clientId"] = tr["clientId"]
        return details

    def verify_jwt(self, jwt, now_s=None):
        """An Ably JWT: HS256 under the key its kid names; returns (capability, clientId)."""
        capability, client_id, _, _ = self.verify_jwt_expiry(jwt, now_s)
        return capability, client_id

    def verify_jwt_expiry(self, jwt, now_s=None):
        """verify_jwt, also returning the JWT's exp."""
        try:
            head_b64, body_b64, sig_b64 = jwt.split(".")
            header = json.loads(b64url_decode(head_b64))
            claims = json.loads(b64url_decode(body_b64))
            sig = b64url_decode(sig_b64)
        except (ValueError, TypeError):
            raise AblyError(401, 40144, "invalid JWT")
        if header.get("alg") != "HS256":
            raise AblyError(401, 40144, "JWT alg must be HS256")
        secret = self.keys.get(header.get("kid"))
        if secret is None:
            raise AblyError(401, 40144, "JWT kid names no key")
        want = hmac.new(secret.encode(), f"{head_b64}.{body_b64}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(want, sig):
            raise AblyError(401, 40144, "JWT signature does not verify")
        now_s = self.now() // 1000 if now_s is None else now_s
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int):
            raise AblyError(401, 40144, "JWT needs iat and exp")
        if iat > now_s + 5:
            raise AblyError(401, 40144, "JWT issued in the future")
        if exp <= now_s:
            raise AblyError(401, 40142, "Token expired")
        capability = parse_capability(claims.get("x-ably-capability", '{"*":["*"]}'))
        user_claims = {k: v for k, v in claims.items()
                       if k.startswith(("ably.channel.", "ably.room.")) and isinstance(v, str)}
        return capability, claims.get("x-ably-clientId"), exp, user_claims

    def verify_embedded(self, jwt, now_s=None):
        """A JWT of the app's own carrying an Ably token in `x-ably-token` (its JOSE header, or a
        claim): the inner token is the authority; the outer signature is not Ably's to check,
        but the outer exp must not be later than the inner token's expiry. Returns
        (capability, clientId), or None when `jwt` carries no `x-ably-token`."""
        try:
            head_b64, body_b64, _ = jwt.split(".")
            header = json.loads(b64url_decode(head_b64))
            claims = json.loads(b64url_decode(body_b64))
        except (ValueError, TypeError):
            raise AblyError(401, 40144, "invalid JWT")
        inner = header.get("x-ably-token", claims.get("x-ably-token"))
        if inner is None:
            return None
        if not isinstance(inner, str):
            raise AblyError(401, 40144, "x-ably-token must be a string")
        now_s = self.now() // 1000 if now_s is None else now_s
        if inner.count(".") == 2:
            capability, client_id, inner_exp, user_claims = self.verify_jwt_expiry(inner, now_s)
        else:
            capability, client_id, expires_ms = self.native_token(inner)
            inner_exp, user_claims = expires_ms // 1000, {}
        exp = claims.get("exp")
        if not isinstance(exp, int):
            raise AblyError(401, 40144, "JWT needs exp")
        if exp > inner_exp:
            raise AblyError(401, 40144, "JWT exp is later than the embedded token's expiry")
        if exp <= now_s:
            raise AblyError(401, 40142, "Token expired")
        return capability, client_id, user_claims

    def native_token(self, token):
        entry = self.tokens.get(token)
        if entry is None:
            raise AblyError(401, 40143, "Token unrecognised")
        if entry["expires"] <= self.now():
            raise AblyError(401, 40142, "Token expired")
        return entry["capability"], entry["clientId"], entry["expires"]

    def authenticate(self, authorization):
        if not authorization or not authorization.startswith("Bearer "):
            raise AblyError(401, 40101, "token authentication required")
        try:
            token = base64.b64decode(authorization[7:], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            raise AblyError(401, 40140, "malformed token")
        if token.count(".") == 2:
            embedded = self.verify_embedded(token)
            if embedded is not None:
                return embedded
            capability, client_id, _, user_claims = self.verify_jwt_expiry(token)
            return capability, client_id, user_claims
        capability, client_id, _ = self.native_token(token)
        return capability, client_id, {}

    # ----- HTTP -----

    def start(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def cors(self):
                self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin") or "*")
                # ably-js sends credentials with an Authorization header, as Ably allows.
                self.send_header("Access-Control-Allow-Credentials", "true")
                self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
                self.send_header(
                    "Access-Control-Allow-Headers",
                    self.headers.get("Access-Control-Request-Headers") or "authorization, content-type",
                )
                self.send_header("Access-Control-Expose-Headers", "x-ably-errorcode, x-ably-errormessage")

            def reply(self, status, value, error=None):
                body = json.dumps(value).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if error:
                    self.send_header("X-Ably-ErrorCode", str(error.code))
                    self.send_header("X-Ably-ErrorMessage", error.message)
                self.cors()
                self.end_headers()
                self.wfile.write(body)

            def do_OPTIONS(self):
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.cors()
                self.end_headers()

            def body_json(self):
                try:
                    return json.loads(self.raw_body or b"null")
                except ValueError:
                    raise AblyError(400, 40000, "body is not JSON")

            def handle_any(self, method):
                # Read the whole body first, so an error answer leaves the connection usable.
                n = int(self.headers.get("Content-Length") or 0)
                if n > 1 << 20:
                    self.close_connection = True
                    return self.reply(413, {"error": {"code": 40000, "statusCode": 413, "message": "body too large"}})
                self.raw_body = self.rfile.read(n)
                url = urllib.parse.urlsplit(self.path)
                parts = [urllib.parse.unquote(p) for p in url.path.split("/")[1:]]
                with fake.lock:
                    fake.requests.append((method, url.path))
                try:
                    if method == "GET" and parts == ["time"]:
                        return self.reply(200, [fake.now()])
                    if method == "POST" and len(parts) == 3 and parts[0] == "keys" and parts[2] == "requestToken":
                        return self.reply(200, fake.request_token(parts[1], self.body_json()))
                    if len(parts) == 3 and parts[0] == "channels" and parts[2] == "messages":
                        channel = parts[1]
                        capability, client_id, user_claims = fake.authenticate(self.headers.get("Authorization"))
                        op = "publish" if method == "POST" else "history"
                        # A Chat room's channel is `<room>::$chat`; capabilities name the room.
                        room = channel[: -len(CHAT_SUFFIX)] if channel.endswith(CHAT_SUFFIX) else None
                        if not allows(capability, room if room is not None else channel, op):
                            raise AblyError(401, 40160, f"Channel denied access based on given capability; channelId = {channel}")
                        if method == "POST":
                            msgs = self.body_json()
                            msgs = msgs if isinstance(msgs, list) else [msgs]
                            with fake.lock:
                                claim = user_claim(user_claims, channel, room)
                                for m in msgs:
                                    if isinstance(m, dict):
                                        m.setdefault("clientId", client_id)
                                        m.setdefault("timestamp", fake.now())
                                        if claim is not None:
                                            m.setdefault("extras", {})["userClaim"] = claim
                                fake.channels.setdefault(channel, []).extend(msgs)
                            return self.reply(201, {"channel": channel, "messageId": secrets.token_hex(8)})
                        with fake.lock:
                            history = list(reversed(fake.channels.get(channel, [])))
                        return self.reply(200, history)
                    raise AblyError(404, 40400, f"no such endpoint {url.path}")
                except AblyError as e:
                    return self.reply(
                        e.status,
                        {"error": {"code": e.code, "statusCode": e.status, "message": e.message,
                                   "href": f"https://help.ably.io/error/{e.code}"}},
                        e,
                    )

            def do_GET(self):
                self.handle_any("GET")

            def do_POST(self):
                self.handle_any("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()


if __name__ == "__main__":
    keys = dict(arg.split(":", 1) for arg in sys.argv[1:]) or {"xVLyHw.mDYnFA": "FAKESECRETfakesecret"}
    port = FakeAbly(keys).start()
    print(f"fake-ably: listening on http://127.0.0.1:{port}", flush=True)
    threading.Event().wait()
