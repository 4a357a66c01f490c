// Unit tests of capsign-ably (the built ES module), with a scripted capsign (a fetch function)
// and a stand-in for ably-js's client (auth.authorize calls the authCallback, as ably-js does).
// The e2e suite runs the helper with the real `ably` package against the real capsign.
// Run: npm test (after npm run build).

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  createCapsign, resourceOf, parseList, capabilityOf, covers, OPERATIONS, CapsignError,
} from '../dist/esm/index.js';

/** A capsign answering from `decide(capability, request)`: { status, granted, denied,
 * partial, body }. Records each call's asked capability and grants header. */
function fakeCapsign(decide = (cap) => ({ granted: cap })) {
  const calls = [];
  let sealed = 0;
  const fetch = async (url, init) => {
    const u = new URL(url, 'http://capsign.test');
    const asked = u.searchParams.has('capability') ? JSON.parse(u.searchParams.get('capability')) : {};
    calls.push({ asked, grants: init.headers['X-Capsign-Grants'] ?? null, init });
    await new Promise((r) => setTimeout(r, 5));
    const held = init.headers['X-Capsign-Grants'] ? JSON.parse(init.headers['X-Capsign-Grants'].split('|')[1]) : {};
    const out = decide(asked, { held, init });
    if (out.status && out.status !== 200) {
      return new Response(JSON.stringify({ error: { code: out.code ?? 50000, statusCode: out.status, message: out.message ?? 'no' } }),
        { status: out.status, headers: { 'Content-Type': 'application/json' } });
    }
    const capability = { ...held, ...out.granted };
    const headers = { 'Content-Type': 'application/json', ...(out.headers ?? {}) };
    if (Object.keys(out.granted).length > 0) headers['X-Capsign-Grants'] = `v${++sealed}|${JSON.stringify(capability)}`;
    if (out.denied) headers['X-Capsign-Denied'] = out.denied.join(',');
    if (out.partial) headers['X-Capsign-Partial'] = out.partial.join(',');
    return new Response(JSON.stringify({ token: `t${calls.length}`, capability: JSON.stringify(capability) }),
      { status: 200, headers });
  };
  return { fetch, calls };
}

/** ably-js's Auth as the helper meets it: authorize() drops the token and asks the
 * authCallback, which keeps (REST) or fails. */
function fakeClient(capsign) {
  const client = {
    auth: {
      tokenDetails: undefined,
      authorizations: 0,
      authorize() {
        client.auth.tokenDetails = undefined;
        client.auth.authorizations += 1;
        return new Promise((resolve, reject) => capsign.authCallback({}, (err, details) => {
          if (err) return reject(err);
          client.auth.tokenDetails = details;
          return resolve(details);
        }));
      },
    },
    channels: { get: (name) => ({ name }) },
  };
  return client;
}

function setup(decide) {
  const server = fakeCapsign(decide);
  const capsign = createCapsign({ url: 'http://capsign.test/auth', session: 's', fetch: server.fetch, cookies: false });
  const client = fakeClient(capsign);
  return { server, capsign, client };
}

test('resourceOf strips the Chat suffix and channel parameters, keeps other qualifiers', () => {
  assert.equal(resourceOf('rooms:7::$chat'), 'rooms:7');
  assert.equal(resourceOf('[?rewind=1]chat:x'), 'chat:x');
  assert.equal(resourceOf('[meta?rewind=1]log'), '[meta]log');
  assert.equal(resourceOf('[meta]log'), '[meta]log');
  assert.equal(resourceOf('[?rewind=1]rooms:1::$chat'), 'rooms:1');
});

test('parseList decodes entries and throws a CapsignError on a malformed one', () => {
  assert.deepEqual(parseList('a%2Cb, c'), ['a,b', 'c']);
  assert.deepEqual(parseList(null), []);
  assert.throws(() => parseList('ok,%E0%A4%A'), (e) => e instanceof CapsignError && /malformed/.test(e.message));
});

test('OPERATIONS has no prototype and follows Ably Chat\'s capability table', () => {
  assert.equal('constructor' in OPERATIONS, false);
  assert.equal('toString' in OPERATIONS, false);
  assert.deepEqual(OPERATIONS['messages.history'], ['subscribe', 'history']);
  assert.deepEqual(OPERATIONS['occupancy.get'], ['subscribe', 'channel-metadata']);
  assert.deepEqual(OPERATIONS['reactions.send'], ['publish']);
  assert.deepEqual(OPERATIONS['messages.reactions.send'], ['annotation-publish']);
  assert.ok(Object.isFrozen(OPERATIONS));
});

test('covers follows Ably\'s matching', () => {
  const cap = { 'chat:*': ['publish'], 'doc:1': ['*'], '[*]*': ['stats'] };
  assert.ok(covers(cap, 'chat:a', ['publish']));
  assert.ok(covers(cap, 'chat:a:b', ['publish']));
  assert.ok(!covers(cap, 'chat', ['publish']));
  assert.ok(!covers(cap, 'chat:a', ['subscribe']));
  assert.ok(covers(cap, 'doc:1', ['history', 'publish']));
  assert.ok(covers(cap, '[meta]x', ['stats']));
  assert.ok(!covers({ '*': ['publish'] }, '[meta]x', ['publish']));
  assert.ok(covers({ '*': ['publish'] }, 'any:thing', ['publish']));
});

test('capabilityOf reads TokenDetails, JWTs, embedded JWTs, and nothing else', () => {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const jwt = `${b64({ alg: 'HS256' })}.${b64({ 'x-ably-capability': '{"a":["publish"]}' })}.sig`;
  assert.deepEqual(capabilityOf({ token: jwt }), { a: ['publish'] });
  assert.deepEqual(capabilityOf({ token: `${b64({ 'x-ably-token': jwt })}.${b64({})}.sig` }), { a: ['publish'] });
  assert.deepEqual(capabilityOf({ capability: '{"b":["*"]}' }), { b: ['*'] });
  assert.deepEqual(capabilityOf({ token: 'opaque' }), {});
  assert.deepEqual(capabilityOf({ token: 'a.b.c' }), {});
  assert.deepEqual(capabilityOf(null), {});
});

test('20 acquires at once cost one call for the union, and each is handed over', async () => {
  const { server, capsign, client } = setup();
  const names = Array.from({ length: 20 }, (_, i) => `chat:${i}`);
  const out = await Promise.all(names.map((n) => capsign.acquire(client, { [n]: ['publish'] })));
  assert.equal(server.calls.length, 1);
  assert.deepEqual(Object.keys(server.calls[0].asked).sort(), [...names].sort());
  for (const o of out) assert.equal(Object.keys(o.granted).length, 20);
  assert.equal(client.auth.authorizations, 1, 'one authorize() for the whole batch');
});

test('acquires arriving while a call is in flight join the next one: at most 2 calls, nothing lost', async () => {
  const { server, capsign, client } = setup();
  const first = capsign.acquire(client, { 'chat:0': ['publish'] });
  await new Promise((r) => setTimeout(r, 2)); // the first call is in flight
  const later = Array.from({ length: 5 }, (_, i) => capsign.acquire(client, { [`chat:${i + 1}`]: ['publish'] }));
  await Promise.all([first, ...later]);
  assert.equal(server.calls.length, 2);
  assert.equal(server.calls[1].grants, 'v1|{"chat:0":["publish"]}', 'the second call sends the first answer\'s grants');
  assert.deepEqual(Object.keys(capabilityOf(client.auth.tokenDetails)).sort(),
    ['chat:0', 'chat:1', 'chat:2', 'chat:3', 'chat:4', 'chat:5']);
  assert.equal(capsign.grants.startsWith('v2|'), true);
});

test('a failed acquire fails alone: the credential stays, renewals ask for nothing new', async () => {
  let fail = false;
  const { server, capsign, client } = setup((cap) => (fail ? { status: 503, code: 50300 } : { granted: cap }));
  await capsign.acquire(client, { 'chat:a': ['publish'] });
  const held = client.auth.tokenDetails;
  fail = true;
  await assert.rejects(capsign.acquire(client, { 'chat:b': ['publish'] }), (e) => e.statusCode === 503);
  assert.equal(client.auth.tokenDetails, held, 'the client keeps its credential');
  fail = false;
  await client.auth.authorize(); // ably-js renewing
  assert.deepEqual(server.calls.at(-1).asked, {}, 'the renewal asks for what is held only');
});

test('a refusal in a batch is retried per asker: only the asker at fault fails', async () => {
  const { server, capsign, client } = setup((cap) => ('admin' in cap
    ? { status: 403, code: 40160, message: 'capability denied for admin' }
    : { granted: cap }));
  const [ok, bad] = await Promise.allSettled([
    capsign.acquire(client, { 'chat:a': ['publish'] }),
    capsign.acquire(client, { admin: ['publish'] }),
  ]);
  assert.equal(ok.status, 'fulfilled');
  assert.equal(bad.status, 'rejected');
  assert.equal(bad.reason.code, 40160);
  assert.equal(server.calls.length, 3, 'the batch, then each asker alone');
});

test('an unknown feature or operation fails at once, without a call', async () => {
  const { server, capsign, client } = setup();
  await assert.rejects(capsign.withAcquire(client, 'chat:a', 'publsh', async () => 1), /unknown feature/);
  await assert.rejects(capsign.acquire(client, { 'chat:a': ['teleport'] }), /unknown feature or operation/);
  assert.equal(server.calls.length, 0);
});

test('withAcquire: held operations run without a call; denied and partial are told apart and final', async () => {
  const { server, capsign, client } = setup((cap) => {
    if ('admin' in cap) return { granted: {}, denied: ['admin'] };
    if ('doc:p' in cap) return { granted: { 'doc:p': ['subscribe'] }, partial: ['doc:p'] };
    return { granted: cap };
  });
  await capsign.acquire(client, { 'chat:a': ['publish'] });
  assert.equal(await capsign.withAcquire(client, 'chat:a', 'publish', async () => 'ran'), 'ran');
  assert.equal(server.calls.length, 1);
  await assert.rejects(capsign.withAcquire(client, 'admin', 'publish', async () => 'ran'),
    (e) => e.code === 40160 && e.statusCode === 403 && /denied publish on admin/.test(e.message));
  await assert.rejects(capsign.withAcquire(client, 'doc:p', ['subscribe', 'history'], async () => 'ran'),
    (e) => e.code === 40160 && /granted only subscribe of subscribe, history on doc:p/.test(e.message));
  assert.equal(server.calls.length, 3, 'one call each, no retries');
});

test('redirects are not followed, and a malformed header is ignored with a warning', async () => {
  const warnings = [];
  const server = fakeCapsign((cap) => ({ granted: cap, headers: { 'X-Capsign-Denied': '%E0%A4%A' } }));
  const capsign = createCapsign({ url: 'http://capsign.test/auth', fetch: server.fetch, cookies: false,
    onWarning: (m) => warnings.push(m) });
  const out = await capsign.acquire(fakeClient(capsign), { 'chat:a': ['publish'] });
  assert.equal(server.calls[0].init.redirect, 'error');
  assert.deepEqual(out.denied, []);
  assert.match(warnings[0], /X-Capsign-Denied ignored: malformed/);
});

test('storage: the grants value is loaded before the first call and saved when it changes', async () => {
  const saved = [];
  const server = fakeCapsign();
  const storage = { load: async () => 'v0|{"chat:old":["publish"]}', save: async (v) => { saved.push(v); } };
  const capsign = createCapsign({ url: 'http://capsign.test/auth', fetch: server.fetch, cookies: false, storage });
  const out = await capsign.acquire(fakeClient(capsign), { 'chat:new': ['publish'] });
  assert.equal(server.calls[0].grants, 'v0|{"chat:old":["publish"]}');
  assert.deepEqual(Object.keys(out.granted).sort(), ['chat:new', 'chat:old']);
  assert.equal(saved.length, 1);
  assert.equal(saved[0], capsign.grants);
});

test('a 401 refreshes the session once and asks again', async () => {
  let n = 0;
  const sessions = [];
  const server = fakeCapsign((cap, { init }) => {
    n += 1;
    return init.headers.Authorization === 'Bearer fresh' ? { granted: cap } : { status: 401, code: 40101 };
  });
  const capsign = createCapsign({ url: 'http://capsign.test/auth', fetch: server.fetch, cookies: false,
    session: ({ refresh }) => { sessions.push(refresh); return refresh ? 'fresh' : 'stale'; } });
  await capsign.acquire(fakeClient(capsign), { 'chat:a': ['publish'] });
  assert.deepEqual(sessions, [false, true]);
  assert.equal(n, 2);
});

test('a call that never answers fails after timeoutMs with a retryable error, and the queue goes on', async () => {
  let hang = true;
  const server = fakeCapsign();
  const fetch = (url, init) => (hang
    ? new Promise((_, reject) => init.signal.addEventListener('abort', () => reject(new Error('aborted'))))
    : server.fetch(url, init));
  const capsign = createCapsign({ url: 'http://capsign.test/auth', fetch, cookies: false, timeoutMs: 50 });
  const client = fakeClient(capsign);
  await assert.rejects(capsign.acquire(client, { 'chat:a': ['publish'] }),
    (e) => e.code === 40170 && e.statusCode === 504 && /no answer within 50 ms/.test(e.message));
  hang = false;
  const out = await capsign.acquire(client, { 'chat:b': ['publish'] });
  assert.deepEqual(Object.keys(out.granted), ['chat:b']);
});

test('an unreachable capsign is a 503, never a 401 (no session refresh) nor a 403', async () => {
  let refreshed = false;
  const capsign = createCapsign({ url: 'http://capsign.test/auth', cookies: false,
    fetch: async () => { throw new TypeError('fetch failed'); },
    session: ({ refresh }) => { refreshed ||= refresh; return 's'; } });
  await assert.rejects(capsign.acquire(fakeClient(capsign), { 'chat:a': ['publish'] }),
    (e) => e.statusCode === 503 && /capsign unreachable: fetch failed/.test(e.message));
  assert.equal(refreshed, false);
});

test('a storage that fails is reported and does not fail the acquire', async () => {
  const warnings = [];
  const server = fakeCapsign();
  const capsign = createCapsign({ url: 'http://capsign.test/auth', fetch: server.fetch, cookies: false,
    onWarning: (m) => warnings.push(m),
    storage: { load: () => { throw new Error('no disk'); }, save: async () => { throw new Error('disk full'); } } });
  const out = await capsign.acquire(fakeClient(capsign), { 'chat:a': ['publish'] });
  assert.deepEqual(Object.keys(out.granted), ['chat:a']);
  assert.match(warnings.join('\n'), /storage.load failed \(no disk\)/);
  assert.match(warnings.join('\n'), /storage.save failed \(disk full\)/);
  assert.ok(capsign.grants, 'kept in memory');
});
