// The helper's Node example (clients/js/examples/node), run as a user runs it: header mode,
// the grants value kept in a file. First run: three channels at once, one of them denied;
// second run (a restart): the two granted channels again, held from the file, so the only
// capsign call is the connection's first token.
// Environment: CAPSIGN, ABLY_PORT, SESSION_ALICE.

import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

import { checker } from './checks.mjs';

const EXAMPLE = fileURLToPath(new URL('../../clients/js/examples/node/index.mjs', import.meta.url));
const { check, report } = checker('capsign-ably examples', 60_000);
const dir = mkdtempSync(join(tmpdir(), 'capsign-example-'));
const env = {
  ...process.env,
  AUTH_URL: `${process.env.CAPSIGN}/auth`,
  SESSION: process.env.SESSION_ALICE,
  ABLY_ENDPOINT: `127.0.0.1:${process.env.ABLY_PORT}`,
  GRANTS_FILE: join(dir, 'grants'),
};
const run = (...channels) => new Promise((resolve) => {
  execFile(process.execPath, [EXAMPLE, ...channels], { env, timeout: 30_000 }, (error, stdout, stderr) =>
    resolve({ code: error ? error.code : 0, stdout, stderr }));
});
const tag = Math.random().toString(36).slice(2, 8);

await check('Node example: channels at once, a denied one reported, messages received; a restart holds them from its file', async () => {
  const first = await run(`live:n1-${tag}`, `chat:n2-${tag}`, `admin:n3-${tag}`);
  assert.equal(first.code, 1, `exit code: ${first.stdout}${first.stderr}`);
  assert.match(first.stdout, new RegExp(`live:n1-${tag}: received "hello live:n1-${tag}"`));
  assert.match(first.stdout, new RegExp(`chat:n2-${tag}: received "hello chat:n2-${tag}"`));
  assert.match(first.stdout, new RegExp(`admin:n3-${tag}: refused \\(40160: capsign denied`));
  assert.match(first.stdout, /connection \S+ connected/);
  assert.ok(readFileSync(env.GRANTS_FILE, 'utf8').length > 0, 'the grants value was saved');
  const again = await run(`live:n1-${tag}`, `chat:n2-${tag}`);
  assert.equal(again.code, 0, again.stdout + again.stderr);
  assert.match(again.stdout, /capsign calls: 1;/, again.stdout);
});

rmSync(dir, { recursive: true, force: true });
report();
