// Types of capsign-ably (clients/js/index.js).

/** Ably capability: resource (or pattern) → operations. */
export type Capability = Record<string, string[]>;

/** What ably-js passes to an authCallback (the fields capsign reads). */
export interface TokenParams {
  capability?: Capability | string;
  clientId?: string;
  ttl?: number;
}

/** An ErrorInfo constructor, as `Ably.ErrorInfo`. */
export type ErrorInfoConstructor = new (message: string, code: number, statusCode: number) => Error;

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
  /** The fetch to use (default: globalThis.fetch). */
  fetch?: typeof fetch;
  /** Errors are built with it (default: globalThis.Ably.ErrorInfo, else CapsignError). */
  ErrorInfo?: ErrorInfoConstructor;
}

/** What `acquire` resolves with. */
export interface Acquired {
  /** The capability the new credential holds (everything held, new grants included). */
  granted: Capability;
  /** Resources capsign denied (X-Capsign-Denied). */
  denied: string[];
  /** Resources dropped to keep the grant cookie within its budget (X-Capsign-Evicted). */
  evicted: string[];
}

/** The ably-js client surface the helper uses (Rest or Realtime). */
export interface AblyClientLike {
  auth: {
    authorize(tokenParams?: TokenParams): Promise<unknown>;
    tokenDetails?: unknown;
  };
  channels: { get(name: string, options?: unknown): any };
}

export interface Capsign {
  /** ably-js's `authCallback` client option. */
  authCallback(tokenParams: TokenParams, callback: (error: Error | null, credential: unknown) => void): void;
  /** Asks capsign for new grants through `client.auth.authorize`. */
  acquire(client: AblyClientLike, capability: Capability): Promise<Acquired>;
  /**
   * Runs `operation`; on Ably's 40160 asks capsign for the channel's resource (a Chat room's
   * name for `<room>::$chat`) with the feature's operations (see OPERATIONS) and retries once.
   * A denied grant fails at once.
   */
  withAcquire<T>(client: AblyClientLike, channel: string, feature: string | string[], operation: () => Promise<T>): Promise<T>;
  /** `client.channels.get(name)` whose publish, history, attach, subscribe and presence calls acquire on 40160. */
  channel(client: AblyClientLike, name: string, options?: unknown): any;
  /** How many times capsign was called. */
  readonly calls: number;
  /** The X-Capsign-Grants value kept (null with a cookie jar). */
  readonly grants: string | null;
}

export function createCapsign(options: CapsignOptions): Capsign;
export const OPERATIONS: Readonly<Record<string, string[]>>;
export const CAPABILITY_REFUSED: 40160;
export const CHAT_SUFFIX: '::$chat';
export function resourceOf(channel: string): string;
export function parseList(value: string | null): string[];
export function capabilityOf(details: unknown): Capability;
export class CapsignError extends Error {
  constructor(message: string, code: number, statusCode: number);
  code: number;
  statusCode: number;
}
