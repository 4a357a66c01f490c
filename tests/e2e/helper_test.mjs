// The client helper (clients/js, capsign-ably) with the real `ably` package on Node, against
// the real capsign and the fake Ably (REST and Realtime; it answers 40160 for a channel the
// credential does not cover, as Ably does). Node has no cookie jar: the helper keeps
// X-Capsign-Grants. REST and Realtime; channels opened one by one and 5 or 20 at once;
// failures (a webhook answering 503, a denied channel in both deny modes) with held channels
// used afterwards. Prints MEASURE lines (calls per channel, time to a first message).
// Environment: CAPSIGN, CAPSIGN_HOOKED (with a webhook for hook:*), CAPSIGN_STRICT
// (CAPSIGN_DENY=reject), WEBHOOK, ABLY_PORT, SESSION_ALICE, SESSION_EXPIRED.
// Prints one PASS/FAIL line per check and exits non-zero if any failed.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';

import { createCapsign, capabilityOf } from '../../clients/js/dist/esm/index.js';
import { checker, within } from './checks.mjs';

const require = createRequire(import.meta.url);
const Ably = require('ably');

const CAPSIGN = process.env.CAPSIGN;
const ABLY_PORT = Number(process.env.ABLY_PORT);
const ALICE = process.env.SESSION_ALICE;
const EXPIRED = process.env.SESSION_EXPIRED;
const ablyHost = { restHost: '127.0.0.1', realtimeHost: '127.0.0.1', port: ABLY_PORT, tls: false,
  useBinaryProtocol: false, logLevel: 0 };
const VERSION = JSON.parse(readFileSync(new URL('./node_modules/ably/package.json', import.meta.url))).version;
const LABEL = `capsign-ably helper, node (ably ${VERSION})`;

const { check, report } = checker(LABEL, 30_000);

function setup(options = {}, base = CAPSIGN) {
  const capsign = createCapsign({ url: `${base}/auth`, session: ALICE, ErrorInfo: Ably.ErrorInfo, ...options });
  const rest = new Ably.Rest({ ...ablyHost, authCallback: capsign.authCallback });
  return { capsign, rest };
}

/** A Realtime client through the helper, and a record of its connection's states. */
function realtime(options = {}, base = CAPSIGN) {
  const capsign = createCapsign({ url: `${base}/auth`, session: ALICE, ErrorInfo: Ably.ErrorInfo, ...options });
  const rt = new Ably.Realtime({ ...ablyHost, authCallback: capsign.authCallback });
  const states = [];
  rt.connection.on((change) => states.push(change.current));
  return { capsign, rt, states };
}

/** Checks the connection stayed up since `id`: same id, connected, never disconnected. */
function stayedUp(rt, states, id) {
  assert.equal(rt.connection.id, id, 'the same connection');
  assert.equal(rt.connection.state, 'connected');
  for (const s of ['disconnected', 'suspended', 'failed', 'closed']) {
    assert.ok(!states.includes(s), `no ${s} state: ${states.join(' → ')}`);
  }
}

const held = (client) => Object.keys(capabilityOf(client.auth.tokenDetails)).sort();
const names = (prefix, n) => Array.from({ length: n }, (_, i) => `${prefix}-${i}`);
const measured = [];
const run = Math.random().toString(36).slice(2, 8);

await check('20 channels joined one by one through auto-acquire: one credential for all 20, exactly 20 capsign calls', async () => {
  const { capsign, rest } = setup();
  const names = Array.from({ length: 20 }, (_, i) => `chat:auto-${i}`);
  for (const name of names) {
    await capsign.channel(rest, name).publish('m', `hello ${name}`);
  }
  assert.equal(capsign.calls, 20);
  assert.ok(capsign.grants, 'the helper kept X-Capsign-Grants (no cookie jar in Node)');
  const held = Object.keys(capabilityOf(rest.auth.tokenDetails)).sort();
  assert.deepEqual(held, [...names].sort());
  // The last credential alone publishes to the first channel: nothing was lost on the way.
  await rest.channels.get(names[0]).publish('m', 'again');
  assert.equal(capsign.calls, 20);
  const history = await capsign.channel(rest, names[0]).history();
  assert.ok(history.items.length >= 2);
  assert.equal(capsign.calls, 21, 'history was not held: one more call for it');
});

await check('a channel capsign denies fails once, with a clear error, without retries', async () => {
  const { capsign, rest } = setup();
  await capsign.channel(rest, 'chat:ok').publish('m', 'x');
  const before = capsign.calls;
  await assert.rejects(capsign.channel(rest, 'admin:console').publish('m', 'x'), (e) => {
    assert.equal(e.code, 40160);
    assert.match(e.message, /capsign denied publish on admin:console/);
    return true;
  });
  assert.equal(capsign.calls, before + 1);
  // The grants held before are intact.
  await rest.channels.get('chat:ok').publish('m', 'still');
});

await check('acquire() resolves with what is held and what capsign denied', async () => {
  const { capsign, rest } = setup();
  await capsign.acquire(rest, { 'chat:a1': ['publish'] });
  const out = await capsign.acquire(rest, { 'doc:a2': ['subscribe'], 'admin:a3': ['publish'] });
  assert.deepEqual(Object.keys(out.granted).sort(), ['chat:a1', 'doc:a2']);
  assert.deepEqual(out.denied, ['admin:a3']);
});

await check('a 401 makes the helper refresh the app session and ask again; a 403 is final', async () => {
  let refreshed = 0;
  const session = ({ refresh }) => {
    if (refresh) refreshed += 1;
    return refresh ? ALICE : EXPIRED;
  };
  const { capsign, rest } = setup({ session });
  await capsign.channel(rest, 'chat:r1').publish('m', 'x');
  assert.equal(refreshed, 1);
  assert.equal(capsign.calls, 2);
  // A session that stays expired: ably-js gets the 401 as an ErrorInfo.
  const stale = setup({ session: () => EXPIRED });
  await assert.rejects(stale.rest.auth.authorize({ capability: { 'chat:r2': ['publish'] } }), (e) => {
    assert.equal(e.statusCode, 401);
    assert.equal(e.code, 40101);
    return true;
  });
  // clientId mismatch: 403/40102, final.
  const other = setup();
  await assert.rejects(other.rest.auth.authorize({ capability: { 'chat:r3': ['publish'] }, clientId: 'mallory' }), (e) => {
    assert.equal(e.statusCode, 403);
    return true;
  });
});

await check('a Chat room: 40160 on rooms:7::$chat acquires the room, whose claim Ably copies onto messages', async () => {
  const { capsign, rest } = setup();
  await capsign.channel(rest, 'chat:first').publish('m', 'x');
  await capsign.channel(rest, 'rooms:7::$chat').publish('m', 'hello room');
  assert.equal(capsign.calls, 2);
  const held = capabilityOf(rest.auth.tokenDetails);
  assert.ok(held['rooms:7'], JSON.stringify(held));
  assert.deepEqual(held['rooms:7'], ['publish'], 'only what the refused operation needs');
  // The JWT carries the room rule's claim, once, named by the rule's pattern (Ably matches it
  // against the room; the fake does as Ably does).
  const claims = JSON.parse(Buffer.from(rest.auth.tokenDetails.token.split('.')[1], 'base64url'));
  const userClaims = Object.keys(claims).filter((k) => k.startsWith('ably.'));
  assert.deepEqual(userClaims, ['ably.room.rooms:*']);
  // Reading the room's history needs `history`: one more acquire.
  const history = await capsign.channel(rest, 'rooms:7::$chat').history();
  assert.equal(capsign.calls, 3);
  assert.equal(history.items[0].extras.userClaim, '{"role":"moderator"}');
});

for (const n of [5, 20]) {
  await check(`REST, header mode: ${n} channels opened at once on a fresh client: at most 2 calls, every grant kept`, async () => {
    const { capsign, rest } = setup();
    const chans = names(`chat:rest${n}-${run}`, n);
    const out = await Promise.allSettled(chans.map((c) => capsign.channel(rest, c).publish('m', c)));
    assert.deepEqual(out.filter((o) => o.status === 'rejected').map((o) => o.reason?.message), []);
    assert.ok(capsign.calls <= 2, `${capsign.calls} calls`);
    assert.deepEqual(held(rest), [...chans].sort());
    // And again, on a client that holds those: 5 or 20 more at once.
    const more = names(`doc:rest${n}-${run}`, n);
    const before = capsign.calls;
    const again = await Promise.allSettled(more.map((c) => capsign.channel(rest, c).publish('m', c)));
    assert.deepEqual(again.filter((o) => o.status === 'rejected').map((o) => o.reason?.message), []);
    assert.ok(capsign.calls - before <= 2, `${capsign.calls - before} calls`);
    assert.deepEqual(held(rest), [...chans, ...more].sort());
    measured.push(`REST, ${n} channels opened at once: ${capsign.calls - before} capsign call(s) (fresh client: ${before})`);
  });
}

await check('REST: a webhook answering 503 fails that acquire only; held channels and renewals go on, the next acquire works', async () => {
  const { capsign, rest } = setup({}, process.env.CAPSIGN_HOOKED);
  await capsign.channel(rest, `chat:held-${run}`).publish('m', 'x');
  await fetch(`${process.env.WEBHOOK}/fail`, { method: 'POST', body: '1' });
  await assert.rejects(capsign.channel(rest, `hook:blip-${run}`).publish('m', 'x'), (e) => {
    assert.equal(e.statusCode, 503, JSON.stringify(e));
    return true;
  });
  const calls = capsign.calls;
  await capsign.channel(rest, `chat:held-${run}`).publish('m', 'still held');
  assert.equal(capsign.calls, calls, 'a held channel needs no call');
  await rest.auth.authorize(); // a renewal: asks for what is held, never the refused grant
  assert.deepEqual(held(rest), [`chat:held-${run}`]);
  await capsign.channel(rest, `hook:blip-${run}`).publish('m', 'now');
  assert.deepEqual(held(rest), [`chat:held-${run}`, `hook:blip-${run}`]);
});

await check('REST: partly granted and denied are told apart (X-Capsign-Partial, X-Capsign-Denied); neither is retried', async () => {
  const { capsign, rest } = setup();
  const out = await capsign.acquire(rest, { [`chat:part-${run}`]: ['publish', 'presence'], [`admin:part-${run}`]: ['publish'] });
  assert.deepEqual(out.partial, [`chat:part-${run}`]);
  assert.deepEqual(out.denied, [`admin:part-${run}`]);
  assert.deepEqual(out.granted[`chat:part-${run}`], ['publish']);
  const before = capsign.calls;
  await assert.rejects(capsign.withAcquire(rest, `chat:part2-${run}`, ['publish', 'presence'], async () => 'ran'), (e) => {
    assert.equal(e.code, 40160);
    assert.match(e.message, /granted only publish of publish, presence/);
    return true;
  });
  assert.equal(capsign.calls, before + 1);
});

await check('REST: a plain authorize({capability}) capsign refuses (400) does not poison later renewals', async () => {
  const { capsign, rest } = setup({ onWarning: () => {} });
  await capsign.channel(rest, `chat:keep-${run}`).publish('m', 'x');
  await assert.rejects(rest.auth.authorize({ capability: { [`chat:typo-${run}`]: ['publsh'] } }), (e) => e.statusCode === 400);
  // ably-js keeps those token params for every renewal; the helper asks them only once.
  await rest.channels.get(`chat:keep-${run}`).publish('m', 'still held');
  await rest.auth.authorize();
  assert.deepEqual(held(rest), [`chat:keep-${run}`]);
});

await check('Realtime: attach, subscribe and presence.enter on unheld channels acquire in-band; the connection stays up', async () => {
  const { capsign, rt, states } = realtime();
  const first = capsign.channel(rt, `chat:rt-a-${run}`);
  await first.attach();
  const id = rt.connection.id;
  assert.equal(capsign.calls, 1, 'the first token asked for the first channel');
  const sub = capsign.channel(rt, `chat:rt-s-${run}`);
  let received;
  const got = new Promise((resolve) => { received = resolve; });
  await sub.subscribe((m) => received(m.data));
  const pres = capsign.channel(rt, `live:rt-p-${run}`);
  await pres.presence.enter('here');
  assert.deepEqual((await pres.presence.get()).map((m) => m.clientId), ['alice']);
  const publisher = setup();
  await publisher.capsign.channel(publisher.rest, `chat:rt-s-${run}`).publish('m', 'to the subscriber');
  assert.equal(await within(5000, got), 'to the subscriber');
  for (const ch of [first, sub, pres]) assert.equal(ch.state, 'attached');
  // One call per channel, and one more for presence.get (subscribe, on a channel entered
  // with presence only; the helper then attaches it again with the new mode).
  assert.equal(capsign.calls, 4);
  stayedUp(rt, states, id);
  rt.close();
});

await check('Realtime: a channel refused with 40160 (FAILED) attaches after the helper acquires it', async () => {
  const { capsign, rt, states } = realtime();
  await capsign.channel(rt, `chat:rt-first-${run}`).attach();
  const id = rt.connection.id;
  const name = `chat:rt-failed-${run}`;
  await assert.rejects(rt.channels.get(name).attach(), (e) => e.code === 40160);
  assert.equal(rt.channels.get(name).state, 'failed');
  let received;
  const got = new Promise((resolve) => { received = resolve; });
  await capsign.channel(rt, name).subscribe((m) => received(m.data));
  assert.equal(rt.channels.get(name).state, 'attached');
  await capsign.channel(rt, name).publish('m', 'after FAILED');
  assert.equal(await within(5000, got), 'after FAILED');
  stayedUp(rt, states, id);
  rt.close();
});

for (const n of [5, 20]) {
  await check(`Realtime: ${n} channels attached at once through the helper: all attached, at most 2 calls, the grants value keeps all`, async () => {
    const { capsign, rt, states } = realtime();
    await capsign.channel(rt, `chat:rt-base${n}-${run}`).attach();
    const id = rt.connection.id;
    const before = capsign.calls;
    const chans = names(`chat:rt${n}-${run}`, n);
    const out = await Promise.allSettled(chans.map((c) => capsign.channel(rt, c).attach()));
    assert.deepEqual(out.filter((o) => o.status === 'rejected').map((o) => o.reason?.message), []);
    for (const c of chans) assert.equal(rt.channels.get(c).state, 'attached', c);
    assert.ok(capsign.calls - before <= 2, `${capsign.calls - before} calls`);
    // The grants value holds every channel: a client restored from it (storage) gets them all.
    const restored = createCapsign({ url: `${CAPSIGN}/auth`, session: ALICE, ErrorInfo: Ably.ErrorInfo,
      storage: { load: () => capsign.grants, save: () => {} } });
    const rest = new Ably.Rest({ ...ablyHost, authCallback: restored.authCallback });
    await rest.auth.authorize();
    for (const c of chans) assert.ok(held(rest).includes(c), `${c} in the grants value`);
    stayedUp(rt, states, id);
    measured.push(`Realtime, ${n} channels attached at once: ${capsign.calls - before} capsign call(s)`);
    rt.close();
  });
}

await check('Realtime: plain auth.authorize({capability}) widens the live connection (capsign alone, no helper)', async () => {
  const { capsign, rt, states } = realtime();
  await capsign.channel(rt, `chat:plain-${run}`).attach();
  const id = rt.connection.id;
  await rt.auth.authorize({ capability: { [`doc:plain-${run}`]: ['subscribe'] } });
  await rt.channels.get(`doc:plain-${run}`).attach();
  stayedUp(rt, states, id);
  rt.close();
});

await check('Realtime: a denied channel fails once with 40160, in omit and reject mode; the connection and other channels live on', async () => {
  for (const base of [CAPSIGN, process.env.CAPSIGN_STRICT]) {
    const { capsign, rt, states } = realtime({}, base);
    const ok = capsign.channel(rt, `chat:ok-${run}`);
    await ok.attach();
    const id = rt.connection.id;
    const before = capsign.calls;
    await assert.rejects(capsign.channel(rt, `admin:x-${run}`).attach(), (e) => {
      assert.equal(e.code, 40160, JSON.stringify(e));
      return true;
    });
    assert.equal(capsign.calls, before + 1, 'one call, no retry');
    await ok.publish('m', 'still fine');
    await capsign.channel(rt, `doc:after-${run}`).attach();
    stayedUp(rt, states, id);
    rt.close();
  }
});

await check('Realtime, CAPSIGN_DENY=reject: a fresh client opening an allowed and a denied channel at once connects; only the denied one fails', async () => {
  const { capsign, rt, states } = realtime({}, process.env.CAPSIGN_STRICT);
  const [ok, bad] = await Promise.allSettled([
    capsign.channel(rt, `chat:first-ok-${run}`).attach(),
    capsign.channel(rt, `admin:first-bad-${run}`).attach(),
  ]);
  assert.equal(ok.status, 'fulfilled', ok.reason?.message);
  assert.equal(bad.status, 'rejected');
  assert.equal(bad.reason.code, 40160);
  assert.equal(rt.connection.state, 'connected');
  assert.ok(!states.includes('failed'), states.join(' → '));
  assert.ok(held(rt).includes(`chat:first-ok-${run}`), held(rt).join());
  rt.close();
});

await check('Realtime: a webhook answering 503 fails that attach only; the connection and held channels go on', async () => {
  const { capsign, rt, states } = realtime({}, process.env.CAPSIGN_HOOKED);
  const held = capsign.channel(rt, `chat:rt-held-${run}`);
  await held.attach();
  const id = rt.connection.id;
  await fetch(`${process.env.WEBHOOK}/fail`, { method: 'POST', body: '1' });
  await assert.rejects(capsign.channel(rt, `hook:rt-${run}`).attach(), (e) => e.statusCode === 503);
  await held.publish('m', 'still held');
  await capsign.channel(rt, `hook:rt-${run}`).attach();
  stayedUp(rt, states, id);
  rt.close();
});

await check('Realtime: a Chat room\'s ::$chat channel acquires its room', async () => {
  const { capsign, rt, states } = realtime();
  await capsign.channel(rt, `chat:x-${run}`).attach();
  const id = rt.connection.id;
  const room = capsign.channel(rt, `rooms:${run}::$chat`);
  await room.attach();
  await room.publish('m', 'hello room');
  assert.ok(held(rt).includes(`rooms:${run}`), held(rt).join());
  assert.ok(!held(rt).includes(`rooms:${run}::$chat`));
  stayedUp(rt, states, id);
  rt.close();
});

await check('Realtime: calls per channel opened one by one (1 each) and time to a first message on a new channel', async () => {
  const { capsign, rt } = realtime();
  await capsign.channel(rt, `chat:one-0-${run}`).attach();
  const before = capsign.calls;
  const n = 10;
  for (let i = 1; i <= n; i += 1) await capsign.channel(rt, `chat:one-${i}-${run}`).attach();
  assert.equal(capsign.calls - before, n, 'one call per channel');
  measured.push(`Realtime, channels opened one by one: ${(capsign.calls - before) / n} capsign call per channel`);
  const publisher = setup();
  const times = [];
  for (let i = 0; i < 5; i += 1) {
    const name = `chat:ttfm-${i}-${run}`;
    await publisher.capsign.acquire(publisher.rest, { [name]: ['publish'] });
    const start = performance.now();
    let received;
    const got = new Promise((resolve) => { received = resolve; });
    // subscribe resolves once attached (acquired, AUTH, ATTACHED); then the message is sent.
    await capsign.channel(rt, name).subscribe(() => received(performance.now()));
    await publisher.rest.channels.get(name).publish('m', 'first');
    times.push((await within(5000, got)) - start);
  }
  times.sort((a, b) => a - b);
  measured.push(`Realtime, time to a first message on a newly acquired channel (acquire, AUTH, attach, publish, delivery; loopback): median ${times[2].toFixed(1)} ms, max ${times[4].toFixed(1)} ms`);
  rt.close();
});

for (const m of measured) console.log(`MEASURE helper: ${m}`);
report();
