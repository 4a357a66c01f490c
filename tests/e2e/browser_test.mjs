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
const LABEL = 'ably-js chromium';

const results = [];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
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

  await step('the client helper (clients/js) auto-acquires 3 channels with the browser\'s cookie jar, one call each', async () => {
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
      return { calls: capsign.calls, grants: capsign.grants, denied,
        held: Object.keys(m.capabilityOf(rest.auth.tokenDetails)).sort() };
    }, ABLY_PORT);
    assert.equal(out.calls, 4, JSON.stringify(out));
    assert.equal(out.grants, null, 'in a browser the jar keeps the grants, not the helper');
    assert.equal(out.denied, 40160);
    for (const name of ['chat:b0', 'chat:b1', 'chat:b2', 'chat:lobby', 'doc:42']) {
      assert.ok(out.held.includes(name), JSON.stringify(out));
    }
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
