// The client helper (clients/js, capsign-ably) with the real `ably` package on Node, against
// the real capsign and the fake Ably (which answers 40160 for a channel the credential does
// not cover, as Ably does). Node has no cookie jar: the helper keeps X-Capsign-Grants.
// Environment: CAPSIGN, ABLY_PORT, SESSION_ALICE, SESSION_EXPIRED.
// Prints one PASS/FAIL line per check and exits non-zero if any failed.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import assert from 'node:assert/strict';

import { createCapsign, capabilityOf } from '../../clients/js/dist/esm/index.js';
import { checker } from './checks.mjs';

const require = createRequire(import.meta.url);
const Ably = require('ably');

const CAPSIGN = process.env.CAPSIGN;
const ABLY_PORT = Number(process.env.ABLY_PORT);
const ALICE = process.env.SESSION_ALICE;
const EXPIRED = process.env.SESSION_EXPIRED;
const ablyHost = { restHost: '127.0.0.1', port: ABLY_PORT, tls: false, useBinaryProtocol: false, logLevel: 0 };
const VERSION = JSON.parse(readFileSync(new URL('./node_modules/ably/package.json', import.meta.url))).version;
const LABEL = `capsign-ably helper, node (ably ${VERSION})`;

const { check, report } = checker(LABEL, 30_000);

function setup(options = {}) {
  const capsign = createCapsign({ url: `${CAPSIGN}/auth`, session: ALICE, ErrorInfo: Ably.ErrorInfo, ...options });
  const rest = new Ably.Rest({ ...ablyHost, authCallback: capsign.authCallback });
  return { capsign, rest };
}

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
  // The JWT carries the room's claim, and only for the held room.
  const claims = JSON.parse(Buffer.from(rest.auth.tokenDetails.token.split('.')[1], 'base64url'));
  const userClaims = Object.keys(claims).filter((k) => k.startsWith('ably.'));
  assert.deepEqual(userClaims, ['ably.room.rooms:7']);
  // Reading the room's history needs `history`: one more acquire.
  const history = await capsign.channel(rest, 'rooms:7::$chat').history();
  assert.equal(capsign.calls, 3);
  assert.equal(history.items[0].extras.userClaim, '{"role":"moderator"}');
});

report();
