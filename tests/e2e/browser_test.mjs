// ably-js in a real browser: headless Chromium (Debian's package, driven by playwright-core)
// loads capsign's demo page, logs in, and ably-js (the npm package's browser bundle, served
// from disk) calls /auth same-origin with the browser's own cookie jar. The grant cookie
// accumulates across two authorize() calls, the page shows the granted channels, and the
// credential publishes to both channels at the fake Ably. Takes a screenshot.
// Environment: CAPSIGN_DEMO, ABLY_PORT, SCREENSHOT.

import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

const DEMO = process.env.CAPSIGN_DEMO;
const CROSS = process.env.CAPSIGN_CROSS;
const ABLY_PORT = Number(process.env.ABLY_PORT);
const SCREENSHOT = process.env.SCREENSHOT;
const BUNDLE = fileURLToPath(new URL('./node_modules/ably/build/ably.min.js', import.meta.url));
const HELPER = fileURLToPath(new URL('../../clients/js/dist/esm/index.js', import.meta.url));
const EXAMPLE = fileURLToPath(new URL('../../clients/js/examples/browser/index.html', import.meta.url));
const REACT_DIR = fileURLToPath(new URL('../../clients/js/examples/react/', import.meta.url));
const EXAMPLE_SHOT = SCREENSHOT.replace(/\.png$/, '') + '-helper-example.png';
const LABEL = 'ably-js chromium';

const results = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    // A page the test serves through a route has no address of its own, so Chromium's Local
    // Network Access checks take it for a public page and block its WebSocket to 127.0.0.1.
    '--disable-features=LocalNetworkAccessChecks'],
  timeout: 60_000,
});
try {
  const context = await browser.newContext();
  // Nothing leaves loopback.
  await context.route('**/*', (route) => {
    const host = new URL(route.request().url()).hostname;
    return host === '127.0.0.1' || host === 'localhost' ? route.continue() : route.abort();
  });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const granted = () => page.textContent('#granted');

  const step = async (name, fn) => {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error('no result within 30 s')), 30_000);
    });
    try {
      await Promise.race([fn(), timeout]).finally(() => clearTimeout(timer));
      results.push(`PASS ${LABEL} (${browser.version()}): ${name}`);
    } catch (e) {
      results.push(`FAIL ${LABEL}: ${name}: ${e && (e.stack || e.message)}`);
      throw e;
    }
  };

  await step('demo page loads and logs in', async () => {
    await page.goto(`${DEMO}/`);
    await page.fill('form[action="/login"] input[name=user]', 'carol');
    await Promise.all([page.waitForURL(`${DEMO}/`), page.click('form[action="/login"] button')]);
    const cookies = await context.cookies();
    assert.ok(cookies.some((c) => c.name === 'capsign-demo-session'), JSON.stringify(cookies));
  });

  await step('ably-js authorize() twice through the authUrl accumulates grants in the cookie', async () => {
    await page.evaluate((port) => {
      window.capsignAblyOptions = { restHost: '127.0.0.1', port, tls: false, useBinaryProtocol: false };
    }, ABLY_PORT);
    await page.addScriptTag({ path: BUNDLE });
    assert.equal(await page.evaluate(() => typeof window.Ably), 'object');

    await page.fill('#capability', '{"chat:lobby":["publish","subscribe"]}');
    await page.click('#ask button');
    await page.waitForFunction(() => document.getElementById('granted').textContent.includes('chat:lobby'));
    const first = (await context.cookies()).find((c) => c.name === '__Host-capsign');
    assert.ok(first, 'the browser kept the grant cookie');

    await page.fill('#capability', '{"doc:42":["publish","subscribe"]}');
    await page.click('#ask button');
    await page.waitForFunction(() => document.getElementById('granted').textContent.includes('doc:42'));
    const shown = await granted();
    assert.ok(shown.includes('chat:lobby') && shown.includes('doc:42'), shown);
    assert.ok(shown.includes('clientId: carol'), shown);
    const second = (await context.cookies()).find((c) => c.name === '__Host-capsign');
    assert.notEqual(second.value, first.value, 'the cookie was replaced with the larger set');
  });

  await step('the second credential publishes to both channels', async () => {
    const out = await page.evaluate(async () => {
      const c = window.capsignDemo.client();
      await c.channels.get('chat:lobby').publish('m', 'from the browser');
      await c.channels.get('doc:42').publish('m', 'from the browser');
      try {
        await c.channels.get('admin:x').publish('m', 'nope');
        return 'admin:x was allowed';
      } catch (e) {
        return e.code;
      }
    });
    assert.equal(out, 40160);
  });

  await step('the client helper (clients/js) auto-acquires 3 channels with the browser\'s cookie jar, one call each, then 5 at once in at most 2', async () => {
    // The helper, unbundled, as an ES module of the page's origin.
    await context.route('**/capsign-ably.js', (route) =>
      route.fulfill({ path: HELPER, contentType: 'text/javascript' }));
    const out = await page.evaluate(async (port) => {
      const m = await import('/capsign-ably.js');
      const capsign = m.createCapsign({ url: '/auth' });
      const rest = new Ably.Rest({ restHost: '127.0.0.1', port, tls: false, useBinaryProtocol: false,
        authCallback: capsign.authCallback });
      for (const name of ['chat:b0', 'chat:b1', 'chat:b2']) {
        await capsign.channel(rest, name).publish('m', `from the helper to ${name}`);
      }
      let denied = null;
      try {
        await capsign.channel(rest, 'admin:b').publish('m', 'x');
      } catch (e) {
        denied = e.code;
      }
      // Five more at once: one queue, so at most two calls, and the jar keeps every grant.
      const before = capsign.calls;
      const five = ['chat:p0', 'chat:p1', 'chat:p2', 'doc:p3', 'doc:p4'];
      const settled = await Promise.allSettled(five.map((n) => capsign.channel(rest, n).publish('m', n)));
      return { calls: before, parallelCalls: capsign.calls - before, grants: capsign.grants, denied,
        rejected: settled.filter((o) => o.status === 'rejected').length,
        held: Object.keys(m.capabilityOf(rest.auth.tokenDetails)).sort() };
    }, ABLY_PORT);
    assert.equal(out.rejected, 0, JSON.stringify(out));
    assert.ok(out.parallelCalls <= 2, JSON.stringify(out));
    for (const name of ['chat:p0', 'chat:p1', 'chat:p2', 'doc:p3', 'doc:p4']) {
      assert.ok(out.held.includes(name), JSON.stringify(out));
    }
    assert.equal(out.calls, 4, JSON.stringify(out));
    assert.equal(out.grants, null, 'in a browser the jar keeps the grants, not the helper');
    assert.equal(out.denied, 40160);
    for (const name of ['chat:b0', 'chat:b1', 'chat:b2', 'chat:lobby', 'doc:42']) {
      assert.ok(out.held.includes(name), JSON.stringify(out));
    }
  });

  await step('the helper\'s browser example (Realtime, cookie jar): 4 then 20 channels opened at once, at most 2 calls each, in-band on one connection; a denied one refused alone', async () => {
    // The example as a user serves it: its import map points at node_modules.
    await context.route('**/example.html*', (route) => route.fulfill({ path: EXAMPLE, contentType: 'text/html' }));
    await context.route('**/node_modules/ably/build/ably.min.js', (route) =>
      route.fulfill({ path: BUNDLE, contentType: 'text/javascript' }));
    await context.route('**/node_modules/capsign-ably/dist/esm/index.js', (route) =>
      route.fulfill({ path: HELPER, contentType: 'text/javascript' }));
    const example = await context.newPage();
    example.setDefaultTimeout(15_000);
    example.on('console', (m) => console.error('page:', m.text()));
    example.on('pageerror', (e) => console.error('pageerror:', e.message));
    await example.goto(`${DEMO}/example.html?ably=127.0.0.1:${ABLY_PORT}`);
    await example.waitForFunction(() => document.getElementById('connection').textContent === 'connected');
    const id = await example.textContent('#connection-id');
    const before = Number(await example.textContent('#calls'));
    await example.click('#open button');
    await example.waitForFunction(() => document.body.dataset.opened === '4');
    const calls4 = Number(await example.textContent('#calls')) - before;
    assert.ok(calls4 <= 2, `${calls4} calls for 4 channels`);
    for (const name of ['chat:lobby', 'chat:random', 'doc:42']) {
      assert.equal(await example.getAttribute(`[id="channel-${name}"]`, 'class'), 'granted', name);
    }
    assert.match(await example.textContent('[id="channel-admin:console"]'), /refused \(40160/);
    // A message reaches a channel opened that way (publish acquires `publish` first).
    await example.evaluate(async () => {
      const { capsign, realtime } = window.capsignExample;
      await capsign.channel(realtime, 'chat:lobby').publish('m', 'hello from the example');
    });
    await example.waitForFunction(() =>
      document.getElementById('channel-chat:lobby').textContent.includes('hello from the example'));
    // 20 more at once.
    const twenty = Array.from({ length: 20 }, (_, i) => `doc:bulk-${i}`);
    const start = Number(await example.textContent('#calls'));
    await example.fill('#names', twenty.join(', '));
    await example.click('#open button');
    await example.waitForFunction(() => document.body.dataset.opened === '20');
    const calls20 = Number(await example.textContent('#calls')) - start;
    assert.ok(calls20 <= 2, `${calls20} calls for 20 channels`);
    for (const name of twenty) {
      assert.equal(await example.getAttribute(`[id="channel-${name}"]`, 'class'), 'granted', name);
    }
    assert.equal(await example.textContent('#connection-id'), id, 'one connection throughout');
    assert.equal(await example.textContent('#connection'), 'connected');
    await example.screenshot({ path: EXAMPLE_SHOT, fullPage: true });
    console.log(`MEASURE helper in Chromium (cookie jar, Realtime): 4 channels at once ${calls4} call(s), 20 at once ${calls20} call(s)`);
    await example.close();
  });

  await step('the helper\'s React example (ably/react hooks): rooms acquired before they mount, one refused, a message through useChannel', async () => {
    await context.route('**/react-example/**', (route) => {
      const path = new URL(route.request().url()).pathname.replace(/^\/react-example\//, '');
      const file = path === 'index.html' ? 'index.html' : path === 'dist/app.js' ? 'dist/app.js' : null;
      return file
        ? route.fulfill({ path: REACT_DIR + file, contentType: file.endsWith('.js') ? 'text/javascript' : 'text/html' })
        : route.fulfill({ status: 404, body: 'not found' });
    });
    const app = await context.newPage();
    app.setDefaultTimeout(15_000);
    app.on('pageerror', (e) => console.error('pageerror:', e.message));
    await app.goto(`${DEMO}/react-example/index.html?ably=127.0.0.1:${ABLY_PORT}`);
    await app.waitForFunction(() => document.querySelectorAll('li.granted').length === 3
      && document.querySelectorAll('li.refused').length === 1);
    assert.match(await app.textContent('li.refused'), /admin:react: refused \(40160\)/);
    await app.click('li[data-channel="chat:react-1"] button');
    await app.waitForFunction(() =>
      document.querySelector('li[data-channel="chat:react-1"] .messages').textContent.includes('hello chat:react-1'));
    const calls = await app.evaluate(() => window.capsignExample.capsign.calls);
    assert.ok(calls <= 3, `${calls} calls: the connection's token, the rooms, publish`);
    assert.equal(await app.textContent('#connection'), 'connected');
    await app.screenshot({ path: SCREENSHOT.replace(/\.png$/, '') + '-helper-react.png', fullPage: true });
    await app.close();
  });

  await step('a cross-origin authUrl gets cookies only with an "authorization" authHeader (lower case)', async () => {
    // The browser holds an app session cookie for the other capsign's host.
    await context.addCookies([{ name: 'app-session', value: process.env.SESSION_ALICE, url: CROSS }]);
    const out = await page.evaluate(async ({ cross, port, session }) => {
      const opts = { restHost: '127.0.0.1', port, tls: false, useBinaryProtocol: false, authUrl: `${cross}/auth` };
      const capOf = (jwt) => Object.keys(JSON.parse(JSON.parse(
        atob(jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')))['x-ably-capability'])).sort();
      const twice = async (authHeaders, a, b) => {
        const rest = new Ably.Rest({ ...opts, authHeaders });
        await rest.auth.authorize({ capability: { [a]: ['publish'] } });
        return capOf((await rest.auth.authorize({ capability: { [b]: ['publish'] } })).token);
      };
      // No authorization authHeader: ably-js sends no credentials, so the session cookie
      // never reaches capsign: 401.
      let none;
      try {
        await new Ably.Rest(opts).auth.authorize({ capability: { 'chat:x': ['publish'] } });
        none = 'authorized';
      } catch (e) {
        none = e.statusCode;
      }
      return {
        none,
        // ably-js looks for the key "authorization" exactly: "Authorization" sends the
        // header but no cookies, so the grant cookie never comes back.
        capitalised: await twice({ Authorization: `Bearer ${session}` }, 'chat:c1', 'doc:c2'),
        lowercase: await twice({ authorization: `Bearer ${session}` }, 'chat:l1', 'doc:l2'),
      };
    }, { cross: CROSS, port: ABLY_PORT, session: process.env.SESSION_ALICE });
    assert.equal(out.none, 401, JSON.stringify(out));
    assert.deepEqual(out.capitalised, ['doc:c2'], JSON.stringify(out));
    assert.deepEqual(out.lowercase, ['chat:l1', 'doc:l2'], JSON.stringify(out));
  });

  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  results.push(`PASS ${LABEL} (${browser.version()}): screenshot written to ${SCREENSHOT}`);
} catch (e) {
  if (!results.some((r) => r.startsWith('FAIL'))) results.push(`FAIL ${LABEL}: ${e && (e.stack || e.message)}`);
} finally {
  await browser.close();
}
for (const line of results) console.log(line);
process.exit(results.some((l) => l.startsWith('FAIL')) ? 1 : 0);
