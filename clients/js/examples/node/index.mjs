// capsign-ably in a Node service (no cookie jar: header mode), with the grants value kept in a
// file across restarts. It joins the channels named on the command line, all at once, over
// one Realtime connection, publishes one message to each and prints what came back, then
// leaves. Run it twice: the second run asks capsign for nothing it already holds.
//
//   AUTH_URL=https://app.example.com/ably/auth SESSION=<the user's session JWT> \
//     node index.mjs chat:lobby doc:42
//
// ABLY_ENDPOINT=host:port points ably-js at another Ably (the capsign e2e suite's fake);
// GRANTS_FILE says where the grants value is kept (default ./capsign-grants).

import { readFile, writeFile } from 'node:fs/promises';
import * as Ably from 'ably';
import { createCapsign } from 'capsign-ably';

const { AUTH_URL, SESSION, ABLY_ENDPOINT, GRANTS_FILE = 'capsign-grants' } = process.env;
const channels = process.argv.slice(2);
if (!AUTH_URL || !SESSION || channels.length === 0) {
  console.error('usage: AUTH_URL=... SESSION=... node index.mjs CHANNEL...');
  process.exit(2);
}

const capsign = createCapsign({
  url: AUTH_URL,
  session: SESSION,
  ErrorInfo: Ably.ErrorInfo,
  storage: {
    load: () => readFile(GRANTS_FILE, 'utf8').catch(() => null),
    save: (value) => writeFile(GRANTS_FILE, value, { mode: 0o600 }),
  },
});

const [host, port] = ABLY_ENDPOINT ? ABLY_ENDPOINT.split(':') : [];
const realtime = new Ably.Realtime({
  ...(ABLY_ENDPOINT ? { restHost: host, realtimeHost: host, port: Number(port), tls: false } : {}),
  useBinaryProtocol: false,
  authCallback: capsign.authCallback,
});

const results = await Promise.allSettled(channels.map(async (name) => {
  const channel = capsign.channel(realtime, name);
  let received;
  const message = new Promise((resolve, reject) => {
    received = resolve;
    setTimeout(() => reject(new Error('no message within 10 s')), 10_000).unref();
  });
  await channel.subscribe((m) => received(m.data)); // acquires subscribe, attaches
  await channel.publish('greeting', `hello ${name}`); // acquires publish
  return message;
}));

let failed = 0;
results.forEach((r, i) => {
  if (r.status === 'fulfilled') {
    console.log(`${channels[i]}: received "${r.value}"`);
  } else {
    failed += 1;
    console.log(`${channels[i]}: refused (${r.reason.code}: ${r.reason.message})`);
  }
});
console.log(`capsign calls: ${capsign.calls}; connection ${realtime.connection.id} ${realtime.connection.state}`);
realtime.close();
process.exitCode = failed > 0 ? 1 : 0;
