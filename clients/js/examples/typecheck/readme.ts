// The README's examples, compiled by `tsc --strict` against ably's own declarations in
// clients/js/check (as an ES module project and as a CommonJS one). Not run: the e2e suite
// runs the same calls against capsign.
import * as Ably from 'ably';
import { createCapsign, OPERATIONS, type Acquired, type Capability } from 'capsign-ably';

declare function mySession(): string | null;
declare function refreshMySession(): Promise<string>;

export async function readme(): Promise<void> {
  const capsign = createCapsign({
    url: 'https://app.example.com/ably/auth',
    session: ({ refresh }) => (refresh ? refreshMySession() : mySession()),
    ErrorInfo: Ably.ErrorInfo,
  });
  const realtime = new Ably.Realtime({ authCallback: capsign.authCallback });

  // Ask for grants up front …
  const { granted, denied, partial }: Acquired = await capsign.acquire(realtime, { 'doc:42': ['subscribe', 'publish'] });
  const held: Capability = granted;
  console.log(held, denied, partial);

  // … or let the helper ask when a channel needs it: typed as ably's own channel.
  const doc: Ably.RealtimeChannel = capsign.channel(realtime, 'doc:43');
  await doc.subscribe((message: Ably.Message) => console.log(message.data));
  await doc.publish('edit', { op: 'insert' });
  await doc.presence.enter({ cursor: 0 });

  // REST: the same helper, ably's REST channel.
  const rest = new Ably.Rest({ authCallback: capsign.authCallback });
  const feed: Ably.Channel = capsign.channel(rest, 'feed:1');
  const page: Ably.PaginatedResult<Ably.Message> = await feed.history();
  console.log(page.items.length);

  // Any call, by feature name (an Ably Chat room's, say).
  const ops: readonly string[] = OPERATIONS['messages.update'];
  await capsign.withAcquire(realtime, 'support:7::$chat', 'messages.update', async () => ops.length);

  // Header mode with the grants kept across restarts.
  const stored = new Map<string, string>();
  createCapsign({
    url: 'https://app.example.com/ably/auth',
    session: 'a session JWT',
    storage: { load: () => stored.get('grants'), save: (v) => void stored.set('grants', v) },
  });
}
