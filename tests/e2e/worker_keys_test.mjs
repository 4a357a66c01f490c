// Public-key sessions through the Cloudflare Worker: the core's PEM and JWKS verification
// (jsonwebtoken on pure-Rust backends) built for wasm32 and run under workerd. The JWKS comes
// from a URL, so the Worker's fetch reads it at its first request. Each check prints PASS or
// FAIL (e2e.py counts them).
import { createPrivateKey, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const KEYS = join(dirname(fileURLToPath(import.meta.url)), "..", "data", "keys");
const PEM = process.env.WORKER_PEM;
const JWKS = process.env.WORKER_JWKS;
const b64url = (b) => Buffer.from(b).toString("base64url");

function token(key, alg, kid, sub, lifetime = 3600) {
  const now = Math.floor(Date.now() / 1000);
  const header = { alg, typ: "JWT", ...(kid ? { kid } : {}) };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify({ sub, iat: now - 60, exp: now + lifetime }))}`;
  const pk = createPrivateKey(readFileSync(join(KEYS, `${key}.key`)));
  const sig = alg === "EdDSA"
    ? sign(null, Buffer.from(input), pk)
    : sign("sha256", Buffer.from(input), alg === "ES256" ? { key: pk, dsaEncoding: "ieee-p1363" } : pk);
  return `${input}.${b64url(sig)}`;
}

async function auth(base, jwt) {
  const cap = encodeURIComponent(JSON.stringify({ "chat:edge": ["subscribe"] }));
  const r = await fetch(`${base}/auth?capability=${cap}`, { headers: { Authorization: `Bearer ${jwt}` } });
  return { status: r.status, body: await r.text() };
}

function clientIdOf(ablyJwt) {
  return JSON.parse(Buffer.from(ablyJwt.split(".")[1], "base64url"))["x-ably-clientId"];
}

async function check(name, f) {
  try {
    await f();
    console.log(`PASS capsign-worker: ${name}`);
  } catch (e) {
    console.log(`FAIL capsign-worker: ${name}: ${e.message}`);
  }
}

function expectIssued(r, sub) {
  if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.body.slice(0, 200)}`);
  if (clientIdOf(r.body) !== sub) throw new Error(`clientId ${clientIdOf(r.body)}, not ${sub}`);
}

await check("an ES256 session verified by a PEM public key (CAPSIGN_SESSION_PUBLIC_KEY, bound as text)", async () => {
  expectIssued(await auth(PEM, token("ec", "ES256", null, "erin")), "erin");
});
for (const [key, alg, kid] of [["rsa", "RS256", "rsa-1"], ["ec", "ES256", "ec-1"], ["ed", "EdDSA", "ed-1"]]) {
  await check(`a ${alg} session verified by a JWKS fetched from a URL with fetch`, async () => {
    expectIssued(await auth(JWKS, token(key, alg, kid, `user-${alg}`)), `user-${alg}`);
  });
}
await check("a session signed by another key is refused (401), and an expired one", async () => {
  const wrong = await auth(PEM, token("ed", "EdDSA", null, "erin"));
  const expired = await auth(JWKS, token("ec", "ES256", "ec-1", "erin", -120));
  if (wrong.status !== 401 || expired.status !== 401) {
    throw new Error(`HTTP ${wrong.status} and ${expired.status}, not 401 and 401`);
  }
});
