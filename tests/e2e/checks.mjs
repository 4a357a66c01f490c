// The PASS/FAIL bookkeeping the Node end-to-end scripts share: each check is bounded in time
// (a client that retries without end fails its check instead of hanging) and reported on one
// line, which tests/e2e/e2e.py counts.

/** Rejects after `ms`. */
export function within(ms, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** `check(name, fn)` runs one check, labelled `label`, for at most `timeoutMs`; `report()`
 * prints every result and exits non-zero if any failed. */
export function checker(label, timeoutMs) {
  const results = [];
  async function check(name, fn) {
    try {
      await within(timeoutMs, fn());
      results.push(`PASS ${label}: ${name}`);
    } catch (e) {
      const why = e && (e.stack || e.message || JSON.stringify(e));
      results.push(`FAIL ${label}: ${name}: ${String(why).replace(/\n\s*/g, ' | ')}`);
    }
  }
  function report() {
    for (const line of results) console.log(line);
    process.exit(results.some((l) => l.startsWith('FAIL')) ? 1 : 0);
  }
  return { check, report };
}
