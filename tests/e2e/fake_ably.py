"""A fake of Ably (REST and Realtime) for capsign's end-to-end tests, on 127.0.0.1 only.

It checks what Ably checks, as `docs/ably-protocol.md` describes it:

- `POST /keys/{keyName}/requestToken`: a signed TokenRequest, exactly the seven fields; the
  MAC over the newline-terminated sign text (constant-time compare); nonce at least 16
  characters and never seen before (40105); timestamp within two minutes (40104); ttl within
  (0, 24 h] (40003); a capability in Ably's grammar (40000). Issues an opaque token.
- `POST|GET /channels/{name}/messages` (publish, history), authenticated by such a token or by
  an Ably JWT (HS256 under the key its `kid` names, `iat` and `exp` checked), the capability
  enforced with Ably's wildcard rules: 401/40160 when it does not allow the operation there.
- `POST /keys/{keyName}/revokeTokens` (token revocation, for keys created with revocable
  tokens): Basic auth with the key itself (a token: 40162; a key without revocable tokens:
  40163), `targets` of `clientId:…` or `revocationKey:…` (`channel:` is refused per target,
  as Ably enables it only on request), `issuedBefore` neither in the future nor more than an
  hour old (40003), `allowReauthMargin` (enforced 30 s later); answers a batch result per
  target. From `appliesAt` on, a token of that key issued before `issuedBefore` whose clientId
  (or, for a JWT, `x-ably-revocation-key`) matches is refused with 40141, on REST and on
  Realtime, where its connections get `DISCONNECTED` with 40141 (ably-js then asks its
  authUrl for a new token and reconnects); tokens of a revocable key live at most an hour.
- `GET /time`, and CORS for the browser test.
- Realtime: the WebSocket protocol subset ably-js 2.x speaks with `useBinaryProtocol: false`,
  on the same port (ably-js reaches REST and Realtime through one `port`): connect with
  `access_token` (checked by the same code as REST) and `CONNECTED` with connection details;
  `ATTACH`/`ATTACHED` with the channel modes the capability allows, a channel `ERROR` 40160
  when it names no operation there; `MESSAGE` and `PRESENCE` with `ACK`, or `NACK` 40160,
  delivered to the connections attached with the mode that receives them; in-band `AUTH`,
  which replaces the connection's capability (same connection id, a new `CONNECTED`) and is
  refused with 40102 for another clientId; the members present sent in one `SYNC` on
  attaching (they leave with their connection); `HEARTBEAT`, `DETACH`, `CLOSE`.

Runs on aiohttp (one event loop in a thread of its own). Run alone: `python3 fake_ably.py` prints `fake-ably: listening on http://127.0.0.1:PORT`.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
import threading
import time

from aiohttp import WSMsgType, web

# What both fakes share (the operations, and the TokenRequest cases each must answer alike).
SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "fake_ably.json")
with open(SHARED, encoding="utf-8") as f:
    OPERATIONS = set(json.load(f)["operations"])
TR_FIELDS = ["keyName", "ttl", "capability", "clientId", "timestamp", "nonce", "mac"]
MAX_TTL_MS = 24 * 3600 * 1000
REVOCABLE_MAX_TTL_MS = 3600 * 1000
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
    def __init__(self, keys, time_offset_ms=0, revocable=()):
        """`keys`: {keyName: secret}; `revocable`: the key names with revocable tokens."""
        self.keys = dict(keys)
        self.revocable = set(revocable)
        self.revocations = []  # (keyName, target, issuedBefore, appliesAt)
        self.time_offset_ms = time_offset_ms
        self.tokens = {}
        self.nonces = set()
        self.channels = {}
        self.requests = []
        self.connections = {}
        self.members = {}  # channel -> {(connectionId, clientId): presence item}
        self.lock = threading.Lock()
        self.loop = None

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
            if key_name in self.revocable and ttl > REVOCABLE_MAX_TTL_MS:
                raise AblyError(400, 40003, "ttl over 1 h for a key with revocable tokens")
            self.tokens[token] = {
                "capability": capability,
                "clientId": tr.get("clientId"),
                "expires": issued + ttl,
                "issued": issued,
                "keyName": key_name,
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
        if header.get("kid") in self.revocable:
            if exp - iat > REVOCABLE_MAX_TTL_MS // 1000:
                raise AblyError(401, 40003, "token lifetime over 1 h for a key with revocable tokens")
            self.check_revoked(header.get("kid"), iat * 1000, claims.get("x-ably-clientId"),
                               claims.get("x-ably-revocation-key"))
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
        if entry["keyName"] in self.revocable:
            self.check_revoked(entry["keyName"], entry["issued"], entry["clientId"], None)
        return entry["capability"], entry["clientId"], entry["expires"]

    def authenticate(self, authorization):
        """A REST request's `Authorization: Bearer base64(token)`: (capability, clientId,
        user claims)."""
        if not authorization or not authorization.startswith("Bearer "):
            raise AblyError(401, 40101, "token authentication required")
        try:
            token = base64.b64decode(authorization[7:], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            raise AblyError(401, 40140, "malformed token")
        return self.authenticate_token(token)

    def authenticate_token(self, token):
        """A token as a Realtime connection presents it (`access_token`, `AUTH`): an Ably JWT,
        an embedded JWT or a native token; (capability, clientId, user claims)."""
        if not isinstance(token, str) or not token:
            raise AblyError(401, 40101, "token authentication required")
        if token.count(".") == 2:
            embedded = self.verify_embedded(token)
            if embedded is not None:
                return embedded
            capability, client_id, _, user_claims = self.verify_jwt_expiry(token)
            return capability, client_id, user_claims
        capability, client_id, _ = self.native_token(token)
        return capability, client_id, {}

    # ----- Revocation -----

    def check_revoked(self, key_name, issued_ms, client_id, revocation_key):
        """Raises 40141 when a revocation in force covers a token of `key_name` issued at
        `issued_ms` with this clientId and revocation key."""
        now = self.now()
        with self.lock:
            revocations = list(self.revocations)
        for key, target, before, applies_at in revocations:
            if key != key_name or issued_ms >= before or now < applies_at:
                continue
            kind, _, value = target.partition(":")
            if (kind == "clientId" and value == client_id) or (
                    kind == "revocationKey" and revocation_key is not None and value == revocation_key):
                raise AblyError(401, 40141, "Token revoked")

    def revoke_tokens(self, key_name, authorization, body):
        """`POST /keys/{keyName}/revokeTokens`: the batch result, as Ably answers it."""
        if not authorization or not authorization.startswith("Basic "):
            raise AblyError(401, 40162, "revokeTokens needs Basic auth with the key, not a token")
        try:
            name, _, secret = base64.b64decode(authorization[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise AblyError(401, 40101, "malformed Basic credentials")
        if name != key_name or self.keys.get(key_name) is None or not hmac.compare_digest(
                secret.encode(), self.keys[key_name].encode()):
            raise AblyError(401, 40101, "invalid key credentials")
        if key_name not in self.revocable:
            raise AblyError(401, 40163, "token revocation is not enabled for this key (revocable tokens)")
        if not isinstance(body, dict) or not isinstance(body.get("targets"), list) or not body["targets"]:
            raise AblyError(400, 40000, "targets: a non-empty array of type:value strings")
        if len(body["targets"]) > 100:
            raise AblyError(400, 40000, "at most 100 targets")
        now = self.now()
        before = body.get("issuedBefore", now)
        if not isinstance(before, int) or before > now + 1000 or before < now - 3600 * 1000:
            raise AblyError(400, 40003, "issuedBefore must not be in the future nor more than an hour ago")
        margin = body.get("allowReauthMargin", False)
        if not isinstance(margin, bool):
            raise AblyError(400, 40000, "allowReauthMargin must be a boolean")
        applies_at = now + (30_000 if margin else 0)
        results = []
        for target in body["targets"]:
            kind, sep, value = target.partition(":") if isinstance(target, str) else ("", "", "")
            if not sep or not value or kind not in ("clientId", "revocationKey", "channel"):
                results.append({"target": target, "error": error_body(
                    AblyError(400, 40000, "a target is clientId:…, revocationKey:… or channel:…"))})
            elif kind == "channel":
                results.append({"target": target, "error": error_body(
                    AblyError(400, 40000, "channel revocation is not enabled for this app"))})
            else:
                with self.lock:
                    self.revocations.append((key_name, target, before, applies_at))
                results.append({"target": target, "issuedBefore": before, "appliesAt": applies_at})
        if self.loop is not None:
            self.loop.call_later(max(0.0, (applies_at - now) / 1000), self.drop_revoked)
        failures = sum("error" in r for r in results)
        return {"successCount": len(results) - failures, "failureCount": failures, "results": results}

    def drop_revoked(self):
        """Disconnects, with 40141, every Realtime connection whose token is revoked now."""
        for conn in list(self.connections.values()):
            try:
                self.authenticate_token(conn.token)
            except AblyError as e:
                if e.code == 40141:
                    conn.disconnect(e)

    # ----- Realtime -----

    def realtime_connect(self, query):
        """A WebSocket connection's `access_token` (and `clientId`): a new connection's state,
        or raises the AblyError Ably would send before closing."""
        if query.get("format", "json") != "json":
            raise AblyError(400, 40000, "this fake speaks the JSON protocol only (useBinaryProtocol: false)")
        capability, client_id, _ = self.authenticate_token(query.get("access_token") or query.get("accessToken"))
        asked = query.get("clientId")
        if asked is not None and client_id not in (None, "*") and asked != client_id:
            raise AblyError(401, 40102, "clientId does not match the token's")
        conn = RealtimeConnection(self, capability, client_id)
        conn.token = query.get("access_token") or query.get("accessToken")
        with self.lock:
            self.connections[conn.id] = conn
        return conn

    def deliver(self, channel, action, field, items, sender_id):
        """Sends MESSAGE or PRESENCE items to every connection attached to `channel` with the
        mode that receives them."""
        for conn in list(self.connections.values()):
            conn.deliver(channel, action, field, items, sender_id)

    # ----- HTTP and WebSocket -----

    def start(self):
        """Serves REST and Realtime (WebSocket at `/`) on one port of 127.0.0.1, as ably-js
        reaches both through `port`; returns the port."""
        ready = threading.Event()

        def serve():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            app = web.Application(client_max_size=1 << 20, middlewares=[self._errors])
            app.router.add_get("/", self._websocket)
            app.router.add_route("OPTIONS", "/{tail:.*}", self._preflight)
            app.router.add_get("/time", self._time)
            app.router.add_post("/keys/{key}/requestToken", self._request_token)
            app.router.add_post("/keys/{key}/revokeTokens", self._revoke_tokens)
            app.router.add_route("*", "/channels/{channel}/messages", self._messages)
            app.router.add_route("*", "/{tail:.*}", self._not_found)
            self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())
            self.loop.close()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake-ably did not start")
        return self.port

    def stop(self):
        if self.loop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)

    @staticmethod
    def _cors(request, response):
        response.headers["Access-Control-Allow-Origin"] = request.headers.get("Origin") or "*"
        # ably-js sends credentials with an Authorization header, as Ably allows.
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = (
            request.headers.get("Access-Control-Request-Headers") or "authorization, content-type")
        response.headers["Access-Control-Expose-Headers"] = "x-ably-errorcode, x-ably-errormessage"
        return response

    def _reply(self, request, status, value, error=None):
        response = web.Response(status=status, text=json.dumps(value), content_type="application/json")
        if error:
            response.headers["X-Ably-ErrorCode"] = str(error.code)
            response.headers["X-Ably-ErrorMessage"] = error.message
        return self._cors(request, response)

    @web.middleware
    async def _errors(self, request, handler):
        if request.path != "/":
            with self.lock:
                self.requests.append((request.method, request.path))
        try:
            return await handler(request)
        except AblyError as e:
            return self._reply(request, e.status, error_envelope(e), e)
        except web.HTTPRequestEntityTooLarge:
            e = AblyError(413, 40000, "body too large")
            return self._reply(request, 413, error_envelope(e), e)

    async def _body_json(self, request):
        raw = await request.read()
        try:
            return json.loads(raw or b"null")
        except ValueError:
            raise AblyError(400, 40000, "body is not JSON")

    async def _preflight(self, request):
        return self._cors(request, web.Response(status=204))

    async def _time(self, request):
        return self._reply(request, 200, [self.now()])

    async def _not_found(self, request):
        raise AblyError(404, 40400, f"no such endpoint {request.path}")

    async def _request_token(self, request):
        return self._reply(request, 200, self.request_token(request.match_info["key"], await self._body_json(request)))

    async def _revoke_tokens(self, request):
        body = await self._body_json(request)
        return self._reply(request, 200, self.revoke_tokens(
            request.match_info["key"], request.headers.get("Authorization"), body))

    async def _messages(self, request):
        if request.method not in ("GET", "POST"):
            raise AblyError(405, 40000, "GET or POST")
        channel = request.match_info["channel"]
        body = await self._body_json(request) if request.method == "POST" else None
        capability, client_id, user_claims = self.authenticate(request.headers.get("Authorization"))
        op = "publish" if request.method == "POST" else "history"
        room = room_of(channel)
        if not allows(capability, room if room is not None else channel, op):
            raise AblyError(401, 40160, f"Channel denied access based on given capability; channelId = {channel}")
        if request.method == "POST":
            msgs = body if isinstance(body, list) else [body]
            msgs = [m for m in msgs if isinstance(m, dict)]
            claim = user_claim(user_claims, channel, room)
            for m in msgs:
                m.setdefault("id", secrets.token_hex(8))
                m.setdefault("clientId", client_id)
                m.setdefault("timestamp", self.now())
                if claim is not None:
                    m.setdefault("extras", {})["userClaim"] = claim
            with self.lock:
                self.channels.setdefault(channel, []).extend(msgs)
            self.deliver(channel, MESSAGE, "messages", msgs, None)
            return self._reply(request, 201, {"channel": channel, "messageId": secrets.token_hex(8)})
        with self.lock:
            history = list(reversed(self.channels.get(channel, [])))
        return self._reply(request, 200, history)

    async def _websocket(self, request):
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        try:
            conn = self.realtime_connect(request.query)
        except AblyError as e:
            await ws.send_json({"action": ERROR, "error": error_body(e)})
            await ws.close()
            return ws
        conn.ws = ws
        conn.send({"action": CONNECTED, "connectionId": conn.id, "connectionDetails": conn.details()})
        writer = asyncio.ensure_future(conn.writer())
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    break
                try:
                    message = json.loads(frame.data)
                except ValueError:
                    message = None
                if not isinstance(message, dict):
                    conn.fail(AblyError(400, 40000, "protocol message is not a JSON object"))
                    break
                if not conn.handle(message):
                    break
        finally:
            with self.lock:
                self.connections.pop(conn.id, None)
                for members in self.members.values():
                    for who in [w for w in members if w[0] == conn.id]:
                        del members[who]
            # What was queued (a CLOSED, an ERROR) goes out before the socket closes.
            while not conn.outbox.empty() and not ws.closed:
                try:
                    await ws.send_json(conn.outbox.get_nowait())
                except (ConnectionError, RuntimeError):
                    break
            conn.closed = True
            writer.cancel()
            await ws.close()
        return ws


# Realtime protocol actions and flags (ably-js `actions`, `flags`).
HEARTBEAT, ACK, NACK, CONNECTED, DISCONNECTED, CLOSE, CLOSED, ERROR = 0, 1, 2, 4, 6, 7, 8, 9
ATTACH, ATTACHED, DETACH, DETACHED, PRESENCE, MESSAGE, SYNC, AUTH = 10, 11, 12, 13, 14, 15, 16, 17
HAS_PRESENCE = 1 << 0
MODE_PRESENCE, MODE_PUBLISH, MODE_SUBSCRIBE, MODE_PRESENCE_SUBSCRIBE = 1 << 16, 1 << 17, 1 << 18, 1 << 19
MODES_OF_OP = {
    "presence": MODE_PRESENCE | MODE_PRESENCE_SUBSCRIBE,
    "publish": MODE_PUBLISH,
    "subscribe": MODE_SUBSCRIBE | MODE_PRESENCE_SUBSCRIBE,
}
MODE_ALL = MODE_PRESENCE | MODE_PUBLISH | MODE_SUBSCRIBE | MODE_PRESENCE_SUBSCRIBE
PRESENCE_ACTIONS = ["absent", "present", "enter", "leave", "update"]


def room_of(channel):
    """A Chat room's channel is `<room>::$chat`; capabilities name the room."""
    return channel[: -len(CHAT_SUFFIX)] if channel.endswith(CHAT_SUFFIX) else None


def error_body(e):
    return {"code": e.code, "statusCode": e.status, "message": e.message,
            "href": f"https://help.ably.io/error/{e.code}"}


def error_envelope(e):
    return {"error": error_body(e)}


def modes_for(capability, channel):
    """The channel modes a capability allows on `channel`, or None when it covers the channel
    with no operation at all (attaching is then refused with 40160). A capability with only
    other operations there (history, channel-metadata) attaches with no mode."""
    room = room_of(channel)
    name = room if room is not None else channel
    modes = None
    for resource, ops in capability.items():
        if matches(resource, name):
            modes = modes or 0
            for op in ops:
                modes |= MODE_ALL if op == "*" else MODES_OF_OP.get(op, 0)
    return modes


class RealtimeConnection:
    """One WebSocket connection: its credential's capability and clientId, and the channels
    it is attached to with their modes. Runs on the fake's event loop."""

    def __init__(self, fake, capability, client_id):
        self.fake, self.capability, self.client_id = fake, capability, client_id
        self.id = secrets.token_hex(6)
        self.key = f"{self.id}!{secrets.token_hex(6)}"
        self.attached = {}
        self.ws = None
        self.outbox = asyncio.Queue()
        self.closed = False
        self.serial = 0
        self.auths = 0
        self.token = None

    def details(self):
        details = {"connectionKey": self.key, "maxMessageSize": 65536, "maxFrameSize": 262144,
                   "maxInboundRate": 250, "connectionStateTtl": 120000, "maxIdleInterval": 15000,
                   "serverId": "fake-ably"}
        if self.client_id is not None:
            details["clientId"] = self.client_id
        return details

    def send(self, message):
        """Queues a protocol message; `writer` sends them in order."""
        if not self.closed:
            self.outbox.put_nowait(message)

    async def writer(self):
        """Sends queued messages in order, and a HEARTBEAT after 5 s of silence (the
        connection details promise activity within maxIdleInterval)."""
        while not self.closed:
            try:
                message = await asyncio.wait_for(self.outbox.get(), 5)
            except asyncio.TimeoutError:
                message = {"action": HEARTBEAT}
            try:
                await self.ws.send_json(message)
                if message.get("action") == DISCONNECTED:
                    await self.ws.close()
                    return
            except (ConnectionError, RuntimeError):
                return

    def fail(self, e):
        """A connection-level error: Ably sends ERROR without a channel and closes."""
        self.send({"action": ERROR, "error": error_body(e)})

    def disconnect(self, e):
        """Ably ends a connection whose token was revoked: DISCONNECTED with the error, then
        the socket closes (the client gets a new token and reconnects)."""
        self.send({"action": DISCONNECTED, "error": error_body(e)})

    def handle(self, m):
        """One protocol message from the client; False ends the connection."""
        action, channel = m.get("action"), m.get("channel")
        if action == HEARTBEAT:
            self.send({"action": HEARTBEAT, "id": m.get("id")})
        elif action == CLOSE:
            self.send({"action": CLOSED})
            return False
        elif action == AUTH:
            token = (m.get("auth") or {}).get("accessToken")
            try:
                capability, client_id, _ = self.fake.authenticate_token(token)
            except AblyError as e:
                self.fail(e)
                return False
            if client_id != self.client_id:
                self.fail(AblyError(401, 40102, "incompatible credentials: AUTH with another clientId"))
                return False
            self.capability = capability
            self.token = token
            self.auths += 1
            # Channels whose capability is gone are detached; the others keep their modes.
            for name in list(self.attached):
                if modes_for(capability, name) is None:
                    del self.attached[name]
                    self.send({"action": DETACHED, "channel": name, "error": error_body(
                        AblyError(401, 40160, f"Channel denied access based on given capability; channelId = {name}"))})
            self.send({"action": CONNECTED, "connectionId": self.id, "connectionDetails": self.details()})
        elif action == ATTACH:
            modes = modes_for(self.capability, channel) if isinstance(channel, str) else None
            if modes is None:
                self.send({"action": ERROR, "channel": channel, "error": error_body(
                    AblyError(401, 40160, f"Channel denied access based on given capability; channelId = {channel}"))})
                return True
            asked = (m.get("flags") or 0) & MODE_ALL
            granted = modes & MODE_ALL & (asked or MODE_ALL)
            self.attached[channel] = granted
            members = list(self.fake.members.get(channel, {}).values())
            has_presence = bool(members) and bool(granted & MODE_PRESENCE_SUBSCRIBE)
            self.send({"action": ATTACHED, "channel": channel, "flags": granted | (HAS_PRESENCE if has_presence else 0),
                       "channelSerial": f"{self.id}:0"})
            if has_presence:
                # The members present, in one SYNC (an empty cursor ends it).
                self.send({"action": SYNC, "channel": channel, "channelSerial": "sync:",
                           "presence": [dict(item, action=PRESENCE_ACTIONS.index("present")) for item in members]})
        elif action == DETACH:
            self.attached.pop(channel, None)
            self.send({"action": DETACHED, "channel": channel})
        elif action in (MESSAGE, PRESENCE):
            self.publish(action, m)
        else:
            self.fail(AblyError(400, 40000, f"unexpected protocol action {action!r}"))
            return False
        return True

    def publish(self, action, m):
        """MESSAGE and PRESENCE from the client: ACK and delivery when the capability allows
        it on the channel, else NACK with 40160."""
        channel, serial = m.get("channel"), m.get("msgSerial")
        op, field = ("publish", "messages") if action == MESSAGE else ("presence", "presence")
        room = room_of(channel or "")
        items = [i for i in (m.get(field) or []) if isinstance(i, dict)]
        if not isinstance(channel, str) or not allows(self.capability, room if room is not None else channel, op):
            self.send({"action": NACK, "msgSerial": serial, "count": 1, "error": error_body(
                AblyError(401, 40160, f"Channel denied access based on given capability; channelId = {channel}"))})
            return
        if action == PRESENCE and channel not in self.attached:
            self.send({"action": NACK, "msgSerial": serial, "count": 1,
                       "error": error_body(AblyError(400, 90001, "presence on a channel not attached"))})
            return
        now = self.fake.now()
        for n, item in enumerate(items):
            item.setdefault("id", f"{self.id}:{serial}:{n}")
            item["connectionId"] = self.id
            item.setdefault("timestamp", now)
            if self.client_id is not None:
                item["clientId"] = self.client_id
            if action == PRESENCE:
                act = item.get("action")
                item["action"] = PRESENCE_ACTIONS.index(act) if act in PRESENCE_ACTIONS else act
        with self.fake.lock:
            if action == MESSAGE:
                self.fake.channels.setdefault(channel, []).extend(items)
            else:
                members = self.fake.members.setdefault(channel, {})
                for item in items:
                    who = (self.id, item.get("clientId"))
                    if item["action"] == PRESENCE_ACTIONS.index("leave"):
                        members.pop(who, None)
                    else:
                        members[who] = item
        # Delivered (to this connection too, when it receives) before the ACK, as Ably echoes.
        self.fake.deliver(channel, action, field, items, self.id)
        self.send({"action": ACK, "msgSerial": serial, "count": 1})

    def deliver(self, channel, action, field, items, sender_id):
        modes = self.attached.get(channel)
        want = MODE_SUBSCRIBE if action == MESSAGE else MODE_PRESENCE_SUBSCRIBE
        if modes is None or not modes & want or not items:
            return
        self.serial += 1
        self.send({"action": action, "channel": channel, "id": f"{sender_id or 'rest'}:{self.serial}",
                   "connectionId": sender_id, "timestamp": self.fake.now(), field: items})


if __name__ == "__main__":
    keys = dict(arg.split(":", 1) for arg in sys.argv[1:]) or {"xVLyHw.mDYnFA": "FAKESECRETfakesecret"}
    port = FakeAbly(keys).start()
    print(f"fake-ably: listening on http://127.0.0.1:{port}", flush=True)
    threading.Event().wait()
