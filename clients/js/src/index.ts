// capsign-ably: incremental Ably grants from capsign, on the client side.
//
// - `createCapsign(options)` gives an `authCallback` for ably-js and the calls that widen a
//   client's capability one channel at a time: `acquire`, `withAcquire` and `channel`.
// - Every call to capsign goes through one queue per helper: at most one is in flight, and
//   what is asked meanwhile joins the next one (the union of what was asked), so each call
//   carries the newest sealed grants and no answer overwrites another's grants.
// - New grants are fetched by the helper itself, then handed to ably-js with a bare
//   `auth.authorize()` (in-band `AUTH` on a Realtime connection): a refused request never
//   reaches ably-js, so the client keeps its credential, its connection and its channels.
//
// No import of 'ably' at run time (ably is a peer dependency; its types only are used): the
// module runs unbundled next to ably's browser bundle, in Node, React Native and workers.

import type * as Ably from 'ably';

/** The Ably error code for "operation not permitted by the capability". */
export const CAPABILITY_REFUSED = 40160;

/** The suffix Ably Chat adds to a room's name to make its channel. */
export const CHAT_SUFFIX = '::$chat';

/** Ably capability: resource (or pattern) → operations. */
export type Capability = Record<string, string[]>;

/** Ably's capability operations (`*` is all of them). */
export const ABLY_OPERATIONS: readonly string[] = Object.freeze([
  'annotation-publish', 'annotation-subscribe', 'channel-metadata', 'history',
  'message-delete-any', 'message-delete-own', 'message-update-any', 'message-update-own',
  'object-publish', 'object-subscribe', 'presence', 'privileged-headers', 'publish',
  'push-admin', 'push-subscribe', 'stats', 'subscribe',
]);

/**
 * The capability operations each feature needs: Ably Pub/Sub calls by their names on a
 * channel, and Ably Chat's features by the names of `@ably/chat`'s calls, as Chat's own
 * capability table lists them (message history: subscribe and history; occupancy: subscribe
 * and channel-metadata; room reactions: publish; message reactions: annotation-publish).
 * A plain object without a prototype: `'constructor' in OPERATIONS` is false.
 */
export const OPERATIONS: Readonly<Record<string, readonly string[]>> = Object.freeze(
  Object.assign(Object.create(null) as Record<string, readonly string[]>, {
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
    'messages.history': ['subscribe', 'history'],
    'messages.update': ['message-update-own'],
    'messages.delete': ['message-delete-own'],
    'messages.updateAny': ['message-update-any'],
    'messages.deleteAny': ['message-delete-any'],
    'messages.reactions.send': ['annotation-publish'],
    'messages.reactions.delete': ['annotation-publish'],
    'messages.reactions.subscribe': ['annotation-subscribe'],
    'reactions.send': ['publish'],
    'reactions.subscribe': ['subscribe'],
    'typing.keystroke': ['publish'],
    'typing.stop': ['publish'],
    'typing.subscribe': ['subscribe'],
    'occupancy.get': ['subscribe', 'channel-metadata'],
    'occupancy.subscribe': ['subscribe', 'channel-metadata'],
  }),
);

/** An error capsign or the helper raises, shaped as ably-js's ErrorInfo (code, statusCode). */
export class CapsignError extends Error {
  code: number;
  statusCode: number;
  constructor(message: string, code: number, statusCode: number) {
    super(message);
    this.name = 'CapsignError';
    this.code = code;
    this.statusCode = statusCode;
  }
}

/** An ErrorInfo constructor, as `Ably.ErrorInfo`. */
export type ErrorInfoConstructor = new (message: string, code: number, statusCode: number) => Error;

/** Where the helper keeps the sealed grants between runs, for apps without a cookie jar
 * (React Native, mobile, a Node service that restarts). */
export interface GrantsStorage {
  /** The value saved last, or null. Called once, before the first call to capsign. */
  load(): string | null | undefined | Promise<string | null | undefined>;
  /** Called with each new value capsign hands out. */
  save(value: string): void | Promise<void>;
}

export interface CapsignOptions {
  /** capsign's /auth URL, e.g. "https://app.example.com/auth". */
  url: string;
  /**
   * The app session (a JWT sent as `Authorization: Bearer`), or a function returning it. A
   * function is called with `{ refresh: true }` after capsign answers 401, then capsign is
   * asked once more. Leave unset when the session travels in a cookie.
   */
  session?: string | ((opts: { refresh: boolean }) => string | null | undefined | Promise<string | null | undefined>);
  /** Extra request headers, or a function returning them. */
  headers?: Record<string, string> | (() => Record<string, string> | Promise<Record<string, string>>);
  /** The credential format to ask for (capsign's default when unset). */
  format?: 'jwt' | 'tokenRequest' | 'token' | 'auto' | 'embedded';
  /**
   * Whether a cookie jar keeps the grant cookie (default: true in a browser page). Without
   * one, the helper keeps the X-Capsign-Grants value between calls.
   */
  cookies?: boolean;
  /** Keeps the X-Capsign-Grants value across restarts (no effect with a cookie jar). */
  storage?: GrantsStorage;
  /** The fetch to use (default: globalThis.fetch). */
  fetch?: typeof fetch;
  /** Errors are built with it (default: globalThis.Ably.ErrorInfo, else CapsignError). */
  ErrorInfo?: ErrorInfoConstructor;
  /** Told about what the helper ignored (a malformed response header, a storage that
   * failed; default: console.warn). */
  onWarning?: (message: string) => void;
  /** How long one call to capsign may take, in ms (default 15000). Calls go one at a time,
   * so a call that never ends would hold every later one. */
  timeoutMs?: number;
}

/** What `acquire` resolves with. */
export interface Acquired {
  /** The capability the client's credential now holds (everything held, new grants included). */
  granted: Capability;
  /** Resources asked for and granted nothing (X-Capsign-Denied). */
  denied: string[];
  /** Resources asked for and granted fewer operations than asked (X-Capsign-Partial). */
  partial: string[];
  /** Resources dropped to keep the sealed grants within their budget (X-Capsign-Evicted). */
  evicted: string[];
}

/** The ably-js clients the helper works with. */
export type AblyClient = Ably.Rest | Ably.Realtime;

type AuthCallback = NonNullable<Ably.AuthOptions['authCallback']>;

export interface Capsign {
  /** ably-js's `authCallback` client option. */
  authCallback: AuthCallback;
  /**
   * Asks capsign for new grants and hands the new credential to `client` (a Realtime
   * connection stays up: ably-js sends it in-band). A refused request leaves the client as it
   * was and rejects with capsign's error.
   */
  acquire(client: AblyClient, capability: Capability): Promise<Acquired>;
  /**
   * Runs `operation` once the client holds what `feature` needs on `channel` (a Chat room's
   * name for `<room>::$chat`); when Ably still refuses it with 40160, asks capsign and runs it
   * once more. A denied or partly granted channel fails at once.
   */
  withAcquire<T>(client: AblyClient, channel: string, feature: string | readonly string[], operation: () => Promise<T>): Promise<T>;
  /** `client.channels.get(name)` whose calls in OPERATIONS acquire their grant first. */
  channel(client: Ably.Realtime, name: string, options?: Ably.ChannelOptions): Ably.RealtimeChannel;
  channel(client: Ably.Rest, name: string, options?: Ably.ChannelOptions): Ably.Channel;
  /** How many times capsign was called. */
  readonly calls: number;
  /** The X-Capsign-Grants value kept (null with a cookie jar). */
  readonly grants: string | null;
}

/**
 * The resource a capability names for `channel`: a Chat room's name for its `::$chat`
 * channel, without channel parameters (`[?rewind=1]chat:x` → `chat:x`,
 * `[meta?x=1]log` → `[meta]log`), which capabilities never carry.
 */
export function resourceOf(channel: string): string {
  let name = channel;
  if (name.startsWith('[')) {
    const close = name.indexOf(']');
    if (close > 0) {
      const qualifier = name.slice(1, close).split('?')[0];
      name = (qualifier ? `[${qualifier}]` : '') + name.slice(close + 1);
    }
  }
  return name.endsWith(CHAT_SUFFIX) ? name.slice(0, -CHAT_SUFFIX.length) : name;
}

/**
 * Splits an `X-Capsign-Denied` / `-Partial` / `-Evicted` value into resource names
 * (percent-encoded, comma-separated). Throws a CapsignError naming the header's fault on a
 * value capsign would not send.
 */
export function parseList(value: string | null | undefined): string[] {
  if (!value) return [];
  return value.split(',').map((r) => r.trim()).filter(Boolean).map((r) => {
    try {
      return decodeURIComponent(r);
    } catch {
      throw new CapsignError(`malformed resource list entry ${JSON.stringify(r)}`, 40000, 400);
    }
  });
}

/** The capability of ably-js TokenDetails (a TokenRequest's or an Ably token's, or an Ably
 * JWT's claim, inside an embedded JWT too); `{}` when it carries none. */
export function capabilityOf(details: unknown): Capability {
  const d = details as { capability?: unknown; token?: unknown } | null | undefined;
  if (!d || typeof d !== 'object') return {};
  try {
    if (d.capability) {
      return (typeof d.capability === 'string' ? JSON.parse(d.capability) : d.capability) as Capability;
    }
    let token = typeof d.token === 'string' ? d.token : '';
    if (token.split('.').length !== 3) return {};
    const header = decodePart(token.split('.')[0]) as Record<string, unknown>;
    if (typeof header['x-ably-token'] === 'string') token = header['x-ably-token'];
    if (token.split('.').length !== 3) return {};
    const claims = decodePart(token.split('.')[1]) as Record<string, unknown>;
    const cap = claims['x-ably-capability'];
    return typeof cap === 'string' ? (JSON.parse(cap) as Capability) : {};
  } catch {
    return {};
  }
}

/**
 * Whether `capability` allows every one of `ops` on the channel `resource`, by Ably's
 * matching: `*` matches every channel, `ns:*` every channel under `ns:`, `[*]*` qualified
 * channels too; the operation `*` is every operation.
 */
export function covers(capability: Capability, resource: string, ops: readonly string[]): boolean {
  return ops.every((op) => Object.entries(capability).some(([pattern, allowed]) =>
    Array.isArray(allowed) && (allowed.includes('*') || allowed.includes(op)) && matches(pattern, resource)));
}

function matches(pattern: string, resource: string): boolean {
  const split = (s: string): [string | null, string] => {
    if (!s.startsWith('[')) return [null, s];
    const close = s.indexOf(']');
    return close < 0 ? [null, s] : [s.slice(1, close), s.slice(close + 1)];
  };
  const [pq, pname] = split(pattern);
  const [rq, rname] = split(resource);
  if (pq !== '*' && pq !== rq) return false;
  if (pname === '*') return true;
  if (pname.endsWith(':*')) return rname.startsWith(pname.slice(0, -1)) && rname.length > pname.length - 1;
  return pname === rname;
}

/** The credential ably-js holds (ably-js keeps it on `auth`, outside its declared types). */
function tokenOf(client: AblyClient): Ably.TokenDetails | undefined {
  return (client.auth as { tokenDetails?: Ably.TokenDetails }).tokenDetails ?? undefined;
}

function decodePart(part: string): unknown {
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (part.length % 4)) % 4);
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

/** A token params capability as an object (ably-js passes it as canonical JSON), or null. */
function paramsCapability(value: unknown): Capability | null {
  if (!value) return null;
  try {
    const cap = (typeof value === 'string' ? JSON.parse(value) : value) as Capability;
    return cap && typeof cap === 'object' && Object.keys(cap).length > 0 ? cap : null;
  } catch {
    return null;
  }
}

/** The operations `feature` needs: a name in OPERATIONS, or a list of Ably operations. */
function operationsOf(feature: string | readonly string[]): readonly string[] {
  const ops = typeof feature === 'string' ? OPERATIONS[feature] : feature;
  if (!ops || ops.length === 0 || !ops.every((op) => op === '*' || ABLY_OPERATIONS.includes(op))) {
    throw new CapsignError(
      `capsign-ably: unknown feature or operation ${JSON.stringify(feature)} (a name in OPERATIONS, or Ably operations)`,
      40000, 400);
  }
  return ops;
}

/** What one call to capsign gave. */
interface Answer {
  credential: Ably.TokenDetails | Ably.TokenRequest | string;
  denied: string[];
  partial: string[];
  evicted: string[];
  /** Whether an authCallback of ably-js's got this credential (ably-js applies it itself). */
  toAblyJs: boolean;
  /** The hand-over to each client (one `authorize()` per answer and client). */
  handovers: Map<AblyClient, Promise<void>>;
}

/** One wish for a call to capsign: what to ask for, and who waits for the answer. */
interface Asker {
  capability: Capability;
  /** ably-js's token params (clientId, ttl), for a call the authCallback makes. */
  params: { clientId?: string; ttl?: number };
  fromAblyJs: boolean;
  resolve(answer: Answer): void;
  reject(error: unknown): void;
}

/** Whether a refusal may be the fault of one asker among several (a malformed grant, a
 * denied one in `CAPSIGN_DENY=reject` mode): each is then asked alone. */
const splittable = (e: unknown) => {
  const { statusCode, code } = (e ?? {}) as { statusCode?: number; code?: number };
  return statusCode === 400 || (statusCode === 403 && code === CAPABILITY_REFUSED);
};

function union(into: Capability, more: Capability): void {
  for (const [resource, ops] of Object.entries(more)) {
    into[resource] = [...new Set([...(into[resource] ?? []), ...ops])].sort();
  }
}

export function createCapsign(options: CapsignOptions): Capsign {
  const { url, session, headers, format, storage } = options;
  const fetchImpl = options.fetch ?? globalThis.fetch?.bind(globalThis);
  if (!url) throw new TypeError('capsign: url is required');
  if (!fetchImpl) throw new TypeError('capsign: no fetch; pass options.fetch');
  const g = globalThis as { Ably?: { ErrorInfo?: ErrorInfoConstructor }; document?: unknown; window?: unknown };
  const ErrorInfo: ErrorInfoConstructor = options.ErrorInfo ?? g.Ably?.ErrorInfo ?? CapsignError;
  const warn = options.onWarning ?? ((m: string) => console.warn(`capsign-ably: ${m}`));
  // A browser page keeps the grant cookie itself; elsewhere the helper keeps X-Capsign-Grants.
  const useJar = options.cookies ?? (g.document !== undefined && g.window !== undefined);
  const timeoutMs = options.timeoutMs ?? 15_000;

  let grants: string | null = null;
  let loaded = !storage || useJar;
  let calls = 0;
  /** A credential fetched for `acquire`, waiting for the authCallback `authorize()` causes. */
  let ready: Answer['credential'] | null = null;

  const sessionValue = async (refresh: boolean) =>
    typeof session === 'function' ? session({ refresh }) : session;

  const list = (res: Response, name: string) => {
    try {
      return parseList(res.headers.get(name));
    } catch (e) {
      warn(`${name} ignored: ${(e as Error).message}`);
      return [];
    }
  };

  /** One HTTP call to capsign. */
  async function call(capability: Capability, params: Asker['params'], refresh: boolean): Promise<Answer> {
    if (!loaded && storage) {
      loaded = true;
      try {
        grants = (await storage.load()) ?? null;
      } catch (e) {
        warn(`storage.load failed (${(e as Error)?.message ?? e}); starting with no grants value`);
      }
    }
    const q = new URLSearchParams();
    if (Object.keys(capability).length > 0) q.set('capability', JSON.stringify(capability));
    if (params.clientId && params.clientId !== '*') q.set('clientId', params.clientId);
    if (params.ttl) q.set('ttl', String(params.ttl));
    if (format) q.set('format', format);
    const h: Record<string, string> = { ...(typeof headers === 'function' ? await headers() : headers) };
    const s = await sessionValue(refresh);
    if (s) h.Authorization = `Bearer ${s}`;
    if (!useJar && grants) h['X-Capsign-Grants'] = grants;
    calls += 1;
    const query = q.toString();
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    let res: Response;
    try {
      res = await fetchImpl!(query ? `${url}${url.includes('?') ? '&' : '?'}${query}` : url, {
        headers: h,
        credentials: useJar ? 'include' : 'omit',
        // A redirect would carry the session and the grants to wherever it points.
        redirect: 'error',
        signal: abort.signal,
      });
    } catch (e) {
      // Unreachable, refused, redirected, or too slow: retryable, never a 401 (which would
      // refresh the session) nor a 403 (which would fail a Realtime connection).
      const why = abort.signal.aborted ? `no answer within ${timeoutMs} ms` : (e as Error)?.message ?? String(e);
      throw new ErrorInfo(`capsign unreachable: ${why}`, 40170, abort.signal.aborted ? 504 : 503);
    } finally {
      clearTimeout(timer);
    }
    const sealed = res.headers.get('X-Capsign-Grants');
    if (sealed && !useJar && sealed !== grants) {
      grants = sealed;
      try {
        await storage?.save(sealed);
      } catch (e) {
        warn(`storage.save failed (${(e as Error)?.message ?? e}); the grants value is kept in memory`);
      }
    }
    if (!res.ok) {
      type Envelope = { message?: string; code?: number; statusCode?: number };
      let envelope: Envelope | null = null;
      try {
        envelope = ((await res.json()) as { error?: Envelope }).error ?? null;
      } catch {
        envelope = null;
      }
      const status = envelope?.statusCode ?? res.status;
      const code = envelope?.code ?? (status === 401 ? 40101 : 40170);
      throw new ErrorInfo(envelope?.message ?? `capsign answered ${res.status}`, code, status);
    }
    const type = res.headers.get('Content-Type') || '';
    const credential = type.startsWith('application/jwt') ? await res.text() : await res.json();
    return {
      credential,
      denied: list(res, 'X-Capsign-Denied'),
      partial: list(res, 'X-Capsign-Partial'),
      evicted: list(res, 'X-Capsign-Evicted'),
      toAblyJs: false,
      handovers: new Map(),
    };
  }

  /** A call; a 401 refreshes the app session (when `session` is a function) and asks again. */
  async function request(capability: Capability, params: Asker['params']): Promise<Answer> {
    try {
      return await call(capability, params, false);
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode === 401 && typeof session === 'function') {
        return call(capability, params, true);
      }
      throw e;
    }
  }

  /** Askers merged into the next call, and askers to be asked one per call (after a
   * refusal that one of several may have caused). */
  let queue: Asker[] = [];
  const alone: Asker[] = [];
  let running = false;
  let scheduled = false;

  /** Joins the next call to capsign. */
  function ask(capability: Capability, fromAblyJs: boolean, params: Asker['params'] = {}): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      queue.push({ capability, params, fromAblyJs, resolve, reject });
      if (running || scheduled) return;
      scheduled = true;
      // What is asked in the same turn of the event loop (a page opening its channels) joins.
      setTimeout(() => void pump(), 0);
    });
  }

  /** Calls capsign for what is waiting, one call at a time, until nothing is. */
  async function pump(): Promise<void> {
    running = true;
    scheduled = false;
    for (;;) {
      let askers: Asker[];
      if (alone.length > 0) {
        askers = [alone.shift()!];
      } else if (queue.length > 0) {
        askers = queue;
        queue = [];
      } else {
        break;
      }
      const capability: Capability = {};
      const params: Asker['params'] = {};
      for (const a of askers) {
        union(capability, a.capability);
        params.clientId ??= a.params.clientId;
        if (a.params.ttl) params.ttl = Math.min(params.ttl ?? Infinity, a.params.ttl);
      }
      try {
        const answer = await request(capability, params);
        answer.toAblyJs = askers.some((a) => a.fromAblyJs);
        for (const a of askers) a.resolve(answer);
      } catch (e) {
        const distinct = new Set(askers.map((a) => JSON.stringify(a.capability))).size;
        if (distinct > 1 && splittable(e)) {
          alone.push(...askers);
          continue;
        }
        for (const a of askers) a.reject(e);
      }
    }
    running = false;
  }

  /** Wishes for the next token ably-js asks for (the client has none yet), and the answer
   * that carried each, once there is one. */
  interface Wish {
    capability: Capability;
    answer: Answer | null;
    /** capsign's refusal of this wish, when it was asked alone and refused. */
    error?: unknown;
  }
  let prefetch: Wish[] = [];
  /** Capabilities from ably-js's token params that capsign refused. */
  const refusedParams = new Set<string>();

  const authCallback: AuthCallback = (tokenParams, callback) => {
    if (ready) {
      const credential = ready;
      ready = null;
      callback(null, credential);
      return;
    }
    // ably-js's own token request (connect, renewal) asks for what is held, and for what
    // operations started before the client had a credential need.
    const wishes = prefetch;
    prefetch = [];
    const capability: Capability = {};
    for (const w of wishes) union(capability, w.capability);
    // A capability in ably-js's token params (a plain `auth.authorize({ capability })`) is
    // asked for; ably-js keeps it for every renewal, so once capsign refuses it, it is not
    // asked again (the renewals ask for what is held).
    const fromParams = paramsCapability(tokenParams?.capability);
    const key = fromParams && JSON.stringify(fromParams);
    if (fromParams && key && !refusedParams.has(key)) union(capability, fromParams);
    const params = { clientId: tokenParams?.clientId, ttl: tokenParams?.ttl };
    const refusedByParams = (error: unknown) => {
      if (key && !refusedParams.has(key)) {
        refusedParams.add(key);
        warn(`capsign refused the capability of ably-js's token params (${key}); renewals ask for what is held`);
      }
      callback(error as Ably.ErrorInfo, null);
    };
    ask(capability, true, params).then(
      (answer) => {
        for (const w of wishes) w.answer = answer;
        callback(null, answer.credential);
      },
      (error: unknown) => {
        if (wishes.length === 0 || !splittable(error)) return refusedByParams(error);
        // One operation's wish may be at fault (a denied one with CAPSIGN_DENY=reject): each
        // is asked alone, so a refusal fails that operation, not ably-js's token request (a
        // 403 there fails a Realtime connection).
        void (async () => {
          let last: Answer | null = null;
          for (const w of wishes) {
            try {
              last = w.answer = await ask(w.capability, true, params);
            } catch (e) {
              w.error = e;
            }
          }
          try {
            const base = fromParams && key && !refusedParams.has(key) ? fromParams : {};
            callback(null, (last && Object.keys(base).length === 0 ? last : await ask(base, true, params)).credential);
          } catch (e) {
            refusedByParams(e);
          }
        })();
      },
    );
  };

  /** Makes `client` use `answer`'s credential (or a newer one). */
  function handOver(client: AblyClient, answer: Answer): Promise<void> {
    let done = answer.handovers.get(client);
    if (!done) {
      // ably-js asked for this credential itself: it applies it (a Realtime client as it
      // connects); otherwise it is handed over with authorize(), once a connecting client is
      // connected (ably-js would drop the attempt and start again).
      done = answer.toAblyJs
        ? whenConnected(client)
        : whenConnected(client).then(() => authorizeWith(client, answer.credential));
      answer.handovers.set(client, done);
    }
    return done;
  }

  async function authorizeWith(client: AblyClient, credential: Answer['credential']): Promise<void> {
    ready = credential;
    try {
      // No token params: ably-js keeps its own; the authCallback hands over `ready`.
      await client.auth.authorize();
    } finally {
      if (ready === credential) ready = null;
    }
  }

  /** Resolves once a connecting Realtime client is connected (at once for REST, and for a
   * Realtime client in any other state); rejects when its connection fails, closes or is
   * suspended meanwhile. */
  function whenConnected(client: AblyClient): Promise<void> {
    const connection = (client as Ably.Realtime).connection;
    if (!connection || connection.state !== 'connecting') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const listener = (change: Ably.ConnectionStateChange) => {
        if (change.current === 'connected') {
          connection.off(listener);
          resolve();
        } else if (change.current === 'failed' || change.current === 'closed' || change.current === 'suspended') {
          connection.off(listener);
          reject(change.reason ?? new ErrorInfo(`connection ${change.current}`, 80000, 400));
        }
      };
      connection.on(listener);
    });
  }

  function acquired(client: AblyClient, answer: Answer, capability: Capability): Acquired {
    const asked = (r: string) => r in capability;
    return {
      granted: capabilityOf(tokenOf(client) ?? answer.credential),
      denied: answer.denied.filter(asked),
      partial: answer.partial.filter(asked),
      evicted: [...answer.evicted],
    };
  }

  async function acquire(client: AblyClient, capability: Capability): Promise<Acquired> {
    for (const ops of Object.values(capability)) operationsOf(ops);
    const answer = await ask(capability, false);
    await handOver(client, answer);
    return acquired(client, answer, capability);
  }

  /** The error for `resource` when `out` shows it denied or partly granted, else null. */
  function refusal(out: Acquired, resource: string, ops: readonly string[]): Error | null {
    if (out.denied.includes(resource)) {
      return new ErrorInfo(`capsign denied ${ops.join(', ')} on ${resource}`, CAPABILITY_REFUSED, 403);
    }
    if (out.partial.includes(resource)) {
      const got = out.granted[resource] ?? [];
      return new ErrorInfo(
        `capsign granted only ${got.join(', ') || 'some operations'} of ${ops.join(', ')} on ${resource}`,
        CAPABILITY_REFUSED, 403);
    }
    return null;
  }

  /** Acquires `ops` on `resource`; a denied or partly granted resource is an error. */
  async function acquireFor(client: AblyClient, resource: string, ops: readonly string[]): Promise<void> {
    const out = await acquire(client, { [resource]: [...ops] });
    const refused = refusal(out, resource, ops);
    if (refused) throw refused;
  }

  async function withAcquire<T>(client: AblyClient, channel: string, feature: string | readonly string[], operation: () => Promise<T>): Promise<T> {
    const ops = operationsOf(feature);
    const resource = resourceOf(channel);
    let wish: Wish | null = null;
    let asked = false;
    if (!tokenOf(client)) {
      // No credential yet: ably-js's first token request asks for this resource too. A
      // Realtime client gets one as it connects; a REST client when the operation needs it.
      wish = { capability: { [resource]: [...ops] }, answer: null };
      prefetch.push(wish);
      if ((client as Ably.Realtime).connection) await whenConnected(client);
    }
    const first = wish?.answer;
    const refusedFirst = wish?.error
      ?? (first ? refusal(acquired(client, first, wish!.capability), resource, ops) : null);
    if (refusedFirst) {
      prefetch = prefetch.filter((w) => w !== wish);
      throw refusedFirst;
    }
    if (tokenOf(client) && !covers(capabilityOf(tokenOf(client)), resource, ops)) {
      await acquireFor(client, resource, ops);
      asked = true;
    }
    try {
      return await operation();
    } catch (e) {
      // Another error, or Ably refusing what capsign has just granted: final.
      if ((e as { code?: number })?.code !== CAPABILITY_REFUSED || asked) throw e;
      // The first token asked for it already: capsign's answer says whether it was refused.
      const answered = wish?.answer;
      const refused = wish?.error
        ?? (answered ? refusal(acquired(client, answered, wish!.capability), resource, ops) : null);
      if (refused) throw refused;
      await acquireFor(client, resource, ops);
      return operation();
    } finally {
      if (wish) prefetch = prefetch.filter((w) => w !== wish);
    }
  }

  /** The operations of a Realtime channel that need it attached. */
  const ATTACHING = new Set(['attach', 'subscribe', 'presence.enter', 'presence.update', 'presence.leave',
    'presence.get', 'presence.subscribe']);

  function channel(client: Ably.Realtime, name: string, options?: Ably.ChannelOptions): Ably.RealtimeChannel;
  function channel(client: Ably.Rest, name: string, options?: Ably.ChannelOptions): Ably.Channel;
  function channel(client: AblyClient, name: string, options?: Ably.ChannelOptions): Ably.RealtimeChannel | Ably.Channel {
    const ch = (client.channels as { get(n: string, o?: Ably.ChannelOptions): Ably.RealtimeChannel | Ably.Channel })
      .get(name, options);
    const realtime = typeof (ch as Ably.RealtimeChannel).attach === 'function' ? (ch as Ably.RealtimeChannel) : null;
    const wrap = <O extends object>(target: O, prefix: string): O => new Proxy(target, {
      get(obj, prop, receiver) {
        const value = Reflect.get(obj, prop, receiver) as unknown;
        if (prop === 'presence' && prefix === '' && value && typeof value === 'object') return wrap(value, 'presence.');
        const feature = `${prefix}${String(prop)}`;
        if (typeof value !== 'function') return value;
        if (!(feature in OPERATIONS)) return value.bind(obj);
        return (...args: unknown[]) => withAcquire(client, name, feature, async () => {
          // Attached first, by the helper: ably-js's implicit attach would leave its refusal
          // unhandled, and a channel refused once (FAILED) takes no other call until attached.
          if (realtime && ATTACHING.has(feature)) await attachFor(realtime, OPERATIONS[feature]);
          return value.apply(obj, args);
        });
      },
    });
    return wrap(ch, '');
  }

  /** Attaches `ch`; an attached channel without the mode `ops` need attaches again (its
   * modes were fixed when it attached, before the grant). */
  async function attachFor(ch: Ably.RealtimeChannel, ops: readonly string[]): Promise<void> {
    const modes = (ch.modes ?? []).map((m) => String(m).toLowerCase());
    const missing = ch.state === 'attached' && ops.some((op) =>
      (op === 'subscribe' || op === 'presence') && !modes.includes(op));
    if (missing) await ch.detach();
    if (ch.state !== 'attached') await ch.attach();
  }

  return {
    authCallback,
    acquire,
    withAcquire,
    channel,
    get calls() {
      return calls;
    },
    get grants() {
      return grants;
    },
  };
}
