// ably-js (the `ably` npm package) on Node against the real capsign and the fake Ably.
// Environment: CAPSIGN (base URL), ABLY_PORT (fake Ably), SESSION_ALICE (session JWT).
// Prints one PASS/FAIL line per check and exits non-zero if any failed.

import { createRequire } from 'node:module';
import http from 'node:http';
import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';

import { checker } from './checks.mjs';

const require = createRequire(import.meta.url);
const Ably = require('ably');

const CAPSIGN = process.env.CAPSIGN;
const ABLY_PORT = Number(process.env.ABLY_PORT);
const ALICE = process.env.SESSION_ALICE;
const ablyHost = { restHost: '127.0.0.1', port: ABLY_PORT, tls: false, useBinaryProtocol: false, logLevel: 0 };

const VERSION = JSON.parse(
  readFileSync(new URL('./node_modules/ably/package.json', import.meta.url)),
).version;
const { check, report } = checker(`ably-js node (ably ${VERSION})`, 20_000);

/** A loopback proxy in front of `target` that counts the requests it forwards: how many times
 * ably-js called its authUrl. */
async function countingProxy(target) {
  let count = 0;
  const server = http.createServer((req, res) => {
    count += 1;
    const url = new URL(req.url, target);
    const upstream = http.request(url, { method: req.method, headers: { ...req.headers, host: url.host } }, (up) => {
      res.writeHead(up.statusCode, up.headers);
      up.pipe(res);
    });
    req.pipe(upstream);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    count: () => count,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** A realtime client whose authUrl is `url`; no connection leaves loopback (the fake Ably
 * speaks no realtime protocol, so only the token step is exercised). */
function realtime(url, extra = {}) {
  return new Ably.Realtime({
    ...ablyHost,
    realtimeHost: '127.0.0.1',
    fallbackHosts: [],
    authUrl: `${url}/auth`,
    disconnectedRetryTimeout: 300,
    suspendedRetryTimeout: 300,
    ...extra,
  });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A cookie jar as a browser keeps one: name=value from Set-Cookie, sent back as Cookie. */
function cookieJar() {
  const cookies = new Map();
  return {
    header: () => [...cookies].map(([k, v]) => `${k}=${v}`).join('; '),
    store(res) {
      for (const sc of res.headers.getSetCookie()) {
        const nv = sc.split(';')[0];
        const i = nv.indexOf('=');
        cookies.set(nv.slice(0, i), nv.slice(i + 1));
      }
    },
    size: () => cookies.size,
  };
}

/** An ably-js REST client whose authCallback calls capsign, keeping either a cookie jar or
 * the X-Capsign-Grants value between calls. */
function client({ format = 'jwt', keep = 'cookie', session = ALICE } = {}) {
  const jar = cookieJar();
  let grants = null;
  const calls = [];
  const rest = new Ably.Rest({
    ...ablyHost,
    authCallback: (tokenParams, callback) => {
      (async () => {
        const q = new URLSearchParams({ format });
        if (tokenParams.capability) {
          const c = tokenParams.capability;
          q.set('capability', typeof c === 'string' ? c : JSON.stringify(c));
        }
        const headers = { authorization: `Bearer ${session}` };
        if (keep === 'cookie' && jar.size()) headers.cookie = jar.header();
        if (keep === 'header' && grants) headers['x-capsign-grants'] = grants;
        const res = await fetch(`${CAPSIGN}/auth?${q}`, { headers });
        jar.store(res);
        grants = res.headers.get('x-capsign-grants') ?? grants;
        const body = await res.text();
        calls.push({
          status: res.status,
          asked: q.get('capability'),
          denied: res.headers.get('x-capsign-denied'),
          setCookie: res.headers.get('set-cookie') !== null,
          grantsHeader: res.headers.get('x-capsign-grants') !== null,
        });
        if (!res.ok) {
          const err = JSON.parse(body).error;
          return callback(new Ably.ErrorInfo(err.message, err.code, err.statusCode), null);
        }
        // A TokenRequest or TokenDetails comes as JSON; a JWT (jwt, auto, embedded) as text.
        const json = (res.headers.get('content-type') || '').startsWith('application/json');
        callback(null, json ? JSON.parse(body) : body);
      })().catch((e) => callback(e, null));
    },
  });
  return { rest, calls };
}

/** The capability of the client's current credential, whichever form it took. */
function heldCapability(rest) {
  const td = rest.auth.tokenDetails;
  if (td.capability) return JSON.parse(td.capability);
  let token = td.token;
  const header = JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString());
  // format=embedded: the Ably JWT is inside the app's own, in its x-ably-token header.
  if (header['x-ably-token']) token = header['x-ably-token'];
  const payload = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString());
  return JSON.parse(payload['x-ably-capability']);
}

async function publish(rest, channel) {
  await rest.channels.get(channel).publish('greeting', `hello ${channel}`);
}

async function publishFails(rest, channel, code) {
  try {
    await publish(rest, channel);
  } catch (e) {
    assert.equal(e.code, code, `publish to ${channel}: ${e.message}`);
    return;
  }
  assert.fail(`publish to ${channel} should have failed with ${code}`);
}

for (const format of ['jwt', 'tokenRequest', 'token', 'auto', 'embedded']) {
  for (const keep of ['cookie', 'header']) {
    await check(`${format}, grants kept in a ${keep === 'cookie' ? 'cookie jar' : 'X-Capsign-Grants header'}: one channel, then only a second, a renewal that reseals nothing, publish to both`, async () => {
      const { rest, calls } = client({ format, keep });
      await rest.auth.authorize({ capability: { 'chat:one': ['publish', 'subscribe'] } });
      await rest.auth.authorize({ capability: { 'doc:two': ['history', 'publish'] } });
      assert.equal(calls.length, 2);
      assert.deepEqual(JSON.parse(calls[1].asked), { 'doc:two': ['history', 'publish'] }, 'the second call asks only for the new channel');
      // The first call sent neither carrier and got both; the second only the one it uses.
      assert.deepEqual([calls[0].setCookie, calls[0].grantsHeader], [true, true]);
      assert.deepEqual([calls[1].setCookie, calls[1].grantsHeader], [keep === 'cookie', keep === 'header']);
      // A renewal asking for nothing new: nothing resealed, the client keeps what it has.
      await rest.auth.authorize({ capability: { 'chat:one': ['publish'] } });
      assert.deepEqual([calls[2].setCookie, calls[2].grantsHeader], [false, false], 'a renewal reseals nothing');
      const cap = heldCapability(rest);
      assert.deepEqual(Object.keys(cap).sort(), ['chat:one', 'doc:two'], JSON.stringify(cap));
      await publish(rest, 'chat:one');
      await publish(rest, 'doc:two');
      const history = await rest.channels.get('doc:two').history();
      assert.ok(history.items.length >= 1);
    });
  }

  await check(`${format}: a denied channel fails with 40160 while the others work`, async () => {
    const { rest, calls } = client({ format });
    await rest.auth.authorize({ capability: { 'chat:three': ['publish'] } });
    await rest.auth.authorize({ capability: { 'admin:console': ['publish'] } });
    assert.equal(calls[1].denied, 'admin:console');
    await publishFails(rest, 'admin:console', 40160);
    await publish(rest, 'chat:three');
  });
}

await check('plain authUrl client without a cookie jar', async () => {
  const rest = new Ably.Rest({
    ...ablyHost,
    authUrl: `${CAPSIGN}/auth`,
    authHeaders: { Authorization: `Bearer ${ALICE}` },
  });
  await rest.auth.authorize({ capability: { 'chat:solo': ['publish'] } });
  await publish(rest, 'chat:solo');
  // Without a jar nothing carries the first grant: the next credential holds the new one only.
  await rest.auth.authorize({ capability: { 'doc:solo': ['publish'] } });
  await publish(rest, 'doc:solo');
  await publishFails(rest, 'chat:solo', 40160);
});

await check('a 403 from capsign reaches ably-js as 403 (never retried); a 401 as 401', async () => {
  const mismatch = new Ably.Rest({
    ...ablyHost,
    authUrl: `${CAPSIGN}/auth`,
    authHeaders: { Authorization: `Bearer ${ALICE}` },
    authParams: { clientId: 'somebody-else' },
  });
  try {
    await mismatch.auth.authorize({ capability: { 'chat:x': ['publish'] } });
    assert.fail('authorize should fail');
  } catch (e) {
    assert.equal(e.statusCode, 403, JSON.stringify(e));
  }
  const noSession = new Ably.Rest({ ...ablyHost, authUrl: `${CAPSIGN}/auth` });
  try {
    await noSession.auth.authorize({ capability: { 'chat:x': ['publish'] } });
    assert.fail('authorize should fail');
  } catch (e) {
    assert.equal(e.statusCode, 401, JSON.stringify(e));
  }
});

await check('a 403 from the authUrl sends a realtime client to FAILED after exactly one call', async () => {
  const proxy = await countingProxy(CAPSIGN);
  const rt = realtime(proxy.url, {
    authHeaders: { authorization: `Bearer ${ALICE}` },
    authParams: { clientId: 'somebody-else' },
  });
  try {
    await new Promise((resolve) => rt.connection.once('failed', resolve));
    assert.equal(rt.connection.errorReason.statusCode, 403, JSON.stringify(rt.connection.errorReason));
    await sleep(2000);
    assert.equal(proxy.count(), 1, 'never retried');
  } finally {
    rt.close();
    await proxy.close();
  }
});

await check('a 401 from the authUrl is retried (the realtime client asks again)', async () => {
  const proxy = await countingProxy(CAPSIGN);
  const rt = realtime(proxy.url);
  try {
    for (let i = 0; i < 50 && proxy.count() < 3; i += 1) await sleep(100);
    assert.ok(proxy.count() >= 3, `${proxy.count()} calls`);
    assert.notEqual(rt.connection.state, 'failed');
  } finally {
    rt.close();
    await proxy.close();
  }
});

await check('a credential Ably refuses with 4014x is renewed again and again (bounded here)', async () => {
  // capsign signing with another secret than Ably knows for the key: every JWT is refused.
  let calls = 0;
  const rest = new Ably.Rest({
    ...ablyHost,
    authCallback: async (params, done) => {
      calls += 1;
      try {
        const capability = encodeURIComponent(JSON.stringify({ 'chat:renewal': ['publish'] }));
        const res = await fetch(`${process.env.CAPSIGN_BADKEY}/auth?capability=${capability}`, {
          headers: { authorization: `Bearer ${ALICE}` },
        });
        done(null, await res.text());
      } catch (e) {
        done(e, null);
      }
    },
  });
  const publishing = rest.channels.get('chat:renewal').publish('m', 'x').then(
    () => 'published',
    (e) => `failed ${e.code}`,
  );
  const outcome = await Promise.race([publishing, sleep(4000).then(() => 'still renewing')]);
  // The README's claim, measured: more than a couple of renewals in 4 s, or a final 4014x.
  assert.ok(outcome === 'still renewing' || /^failed 4014\d$/.test(outcome), outcome);
  assert.ok(calls >= 2, `${calls} authCallback calls`);
  console.error(`4014x renewal: ${outcome} after ${calls} authCallback calls in 4 s`);
});

await check("Node's fetch posting a body over the limit (2 and 6 MiB) reads capsign's 413 envelope, not a reset", async () => {
  for (const mib of [2, 6]) {
    const res = await fetch(`${CAPSIGN}/auth`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${ALICE}` },
      body: 'a'.repeat(mib * 1024 * 1024),
    });
    assert.equal(res.status, 413, `${mib} MiB`);
    const env = await res.json();
    assert.equal(env.error.code, 40000);
    assert.equal(res.headers.get('x-ably-errorcode'), '40000');
  }
});

report();
