// capsign-ably: incremental grants for ably-js, from the client side.
//
// - `createCapsign(options)` gives an `authCallback` for ably-js that asks capsign for what
//   ably-js asks for, keeps the sealed grants (the browser's cookie jar where there is one, the
//   X-Capsign-Grants header elsewhere), refreshes the app session once on a 401, and turns
//   capsign's error envelopes into ably-js ErrorInfos.
// - `acquire(client, capability)` asks capsign for new grants; ably-js gets one credential
//   covering everything held.
// - `withAcquire` / `channel` retry an operation once after asking capsign for the channel (or
//   the Chat room) when Ably refused it with 40160; a grant capsign denies fails at once.
//
// No import of 'ably' at load time (ably is a peer dependency): the module runs unbundled in
// browsers next to ably's UMD bundle, in Node, React Native and workers.

/** The Ably error code for "operation not permitted by the capability". */
export const CAPABILITY_REFUSED = 40160;

/** The suffix Ably Chat adds to a room's name to make its channel. */
export const CHAT_SUFFIX = '::$chat';

/**
 * The capability operations each feature needs (Ably's capability operations; Chat features
 * by the names of `@ably/chat`'s calls).
 * @type {Readonly<Record<string, string[]>>}
 */
export const OPERATIONS = Object.freeze({
  publish: ['publish'],
  subscribe: ['subscribe'],
  attach: ['subscribe'],
  history: ['history'],
  'presence.enter': ['presence'],
  'presence.update': ['presence'],
  'presence.leave': ['presence'],
  'presence.get': ['subscribe'],
  'presence.subscribe': ['subscribe'],
  'presence.history': ['history'],
  // Ably Chat
  'messages.send': ['publish'],
  'messages.subscribe': ['subscribe'],
  'messages.history': ['history'],
  'messages.update': ['message-update-own'],
  'messages.delete': ['message-delete-own'],
  'messages.updateAny': ['message-update-any'],
  'messages.deleteAny': ['message-delete-any'],
  'reactions.send': ['annotation-publish'],
  'reactions.subscribe': ['annotation-subscribe'],
  'typing.keystroke': ['publish'],
  'occupancy.get': ['channel-metadata'],
  'occupancy.subscribe': ['channel-metadata'],
});

/** The resource a capability names for `channel`: a Chat room's name for its `::$chat` channel. */
export function resourceOf(channel) {
  return channel.endsWith(CHAT_SUFFIX) ? channel.slice(0, -CHAT_SUFFIX.length) : channel;
}

/** Splits an `X-Capsign-Denied` / `X-Capsign-Evicted` value into resource names. */
export function parseList(value) {
  if (!value) return [];
  return value.split(',').filter(Boolean).map((r) => decodeURIComponent(r.trim()));
}

/** An error capsign or the helper raises, shaped as ably-js's ErrorInfo (code, statusCode). */
export class CapsignError extends Error {
  constructor(message, code, statusCode) {
    super(message);
    this.name = 'CapsignError';
    this.code = code;
    this.statusCode = statusCode;
  }
}

/**
 * @param {import('./index').CapsignOptions} options
 * @returns {import('./index').Capsign}
 */
export function createCapsign(options) {
  const {
    url,
    session,
    headers,
    format,
    fetch: fetchImpl = globalThis.fetch?.bind(globalThis),
  } = options;
  if (!url) throw new TypeError('capsign: url is required');
  if (!fetchImpl) throw new TypeError('capsign: no fetch; pass options.fetch');
  const ErrorInfo = options.ErrorInfo ?? globalThis.Ably?.ErrorInfo ?? CapsignError;
  // A browser keeps the grant cookie itself; elsewhere the helper keeps X-Capsign-Grants.
  const useJar = options.cookies ?? (typeof document !== 'undefined' && typeof window !== 'undefined');
  const state = { grants: null, calls: 0, denied: [], evicted: [], first: null };

  const sessionValue = async (refresh) => {
    if (typeof session === 'function') return session({ refresh });
    return session;
  };

  async function call(tokenParams, capability, refresh) {
    const q = new URLSearchParams();
    if (capability) q.set('capability', typeof capability === 'string' ? capability : JSON.stringify(capability));
    if (tokenParams?.clientId && tokenParams.clientId !== '*') q.set('clientId', tokenParams.clientId);
    if (tokenParams?.ttl) q.set('ttl', String(tokenParams.ttl));
    if (format) q.set('format', format);
    const h = { ...(typeof headers === 'function' ? await headers() : headers) };
    const s = await sessionValue(refresh);
    if (s) h.Authorization = `Bearer ${s}`;
    if (!useJar && state.grants) h['X-Capsign-Grants'] = state.grants;
    state.calls += 1;
    const res = await fetchImpl(`${url}${url.includes('?') ? '&' : '?'}${q}`, {
      headers: h,
      credentials: useJar ? 'include' : 'omit',
    });
    const grants = res.headers.get('X-Capsign-Grants');
    if (grants && !useJar) state.grants = grants;
    state.denied = parseList(res.headers.get('X-Capsign-Denied'));
    state.evicted = parseList(res.headers.get('X-Capsign-Evicted'));
    if (!res.ok) {
      let envelope = null;
      try {
        envelope = (await res.json()).error;
      } catch {
        envelope = null;
      }
      const status = envelope?.statusCode ?? res.status;
      const code = envelope?.code ?? (status === 401 ? 40101 : 40170);
      return { error: new ErrorInfo(envelope?.message ?? `capsign answered ${res.status}`, code, status) };
    }
    const type = res.headers.get('Content-Type') || '';
    return { credential: type.startsWith('application/jwt') ? await res.text() : await res.json() };
  }

  /** Asks capsign once; a 401 refreshes the app session (when `session` is a function) and asks again. */
  async function request(tokenParams) {
    // ably-js's own first token request asks for nothing: then ask for what the operation
    // that caused it needs (see withAcquire).
    const capability = tokenParams?.capability || state.first;
    state.first = null;
    let out = await call(tokenParams, capability, false);
    if (out.error && out.error.statusCode === 401 && typeof session === 'function') {
      out = await call(tokenParams, capability, true);
    }
    if (out.error) throw out.error;
    return out.credential;
  }

  const authCallback = (tokenParams, callback) => {
    request(tokenParams).then(
      (credential) => callback(null, credential),
      (error) => callback(error, null),
    );
  };

  /** Asks for new grants; resolves with what the new credential holds and what was denied. */
  async function acquire(client, capability) {
    const details = await client.auth.authorize({ capability });
    return { granted: capabilityOf(details), denied: [...state.denied], evicted: [...state.evicted] };
  }

  /**
   * Runs `operation`; when Ably refuses it with 40160, asks capsign for `channel`'s resource
   * (a Chat room's name for its `::$chat` channel) with the feature's operations and runs it
   * once more. A grant capsign denies fails at once; a second refusal is final.
   */
  async function withAcquire(client, channel, feature, operation) {
    const ops = OPERATIONS[feature] ?? (Array.isArray(feature) ? feature : [feature]);
    const resource = resourceOf(channel);
    if (!client.auth.tokenDetails) {
      // No credential yet: the first token request asks for this resource too.
      state.first = { [resource]: ops };
    }
    try {
      return await operation();
    } catch (e) {
      if (!e || e.code !== CAPABILITY_REFUSED) throw e;
      const { denied } = await acquire(client, { [resource]: ops });
      if (denied.includes(resource)) {
        throw new ErrorInfo(`capsign denied ${ops.join(', ')} on ${resource}`, CAPABILITY_REFUSED, 403);
      }
      return operation();
    }
  }

  /**
   * A channel whose operations acquire their grant on 40160 (publish, history, attach,
   * subscribe, presence.*); other members are the channel's own.
   */
  function channel(client, name, channelOptions) {
    const ch = client.channels.get(name, channelOptions);
    const wrap = (target, prefix) => new Proxy(target, {
      get(obj, prop, receiver) {
        const value = Reflect.get(obj, prop, receiver);
        if (prop === 'presence' && prefix === '' && value) return wrap(value, 'presence.');
        const feature = `${prefix}${String(prop)}`;
        if (typeof value !== 'function' || !(feature in OPERATIONS)) {
          return typeof value === 'function' ? value.bind(obj) : value;
        }
        return (...args) => withAcquire(client, name, feature, () => value.apply(obj, args));
      },
    });
    return wrap(ch, '');
  }

  return {
    authCallback,
    acquire,
    withAcquire,
    channel,
    /** How many times capsign was called. */
    get calls() {
      return state.calls;
    },
    /** The last X-Capsign-Grants value kept (null with a cookie jar). */
    get grants() {
      return state.grants;
    },
  };
}

/** The capability (object) of ably-js TokenDetails: a TokenRequest's, or an Ably JWT's claim
 * (inside an embedded JWT too). */
export function capabilityOf(details) {
  if (!details) return {};
  if (details.capability) {
    return typeof details.capability === 'string' ? JSON.parse(details.capability) : details.capability;
  }
  const decode = (part) => JSON.parse(base64UrlDecode(part));
  let token = details.token;
  if (!token || token.split('.').length !== 3) return {};
  const header = decode(token.split('.')[0]);
  if (header['x-ably-token']) token = header['x-ably-token'];
  if (token.split('.').length !== 3) return {};
  const claims = decode(token.split('.')[1]);
  return claims['x-ably-capability'] ? JSON.parse(claims['x-ably-capability']) : {};
}

function base64UrlDecode(part) {
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (part.length % 4)) % 4);
  const binary = atob(b64);
  const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}
