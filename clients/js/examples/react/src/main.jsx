// capsign-ably with ably's React hooks (`ably/react`). The hooks attach and subscribe by
// themselves, so a channel's grant is acquired before its ChannelProvider mounts: `useGrant`
// asks capsign through the helper (no call when the credential already covers it), and the
// channel renders once granted, or shows why not. Rooms mounting together share one call.

import * as Ably from 'ably';
import { AblyProvider, ChannelProvider, useAbly, useChannel, useConnectionStateListener } from 'ably/react';
import { createCapsign } from 'capsign-ably';
import { StrictMode, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';

const endpoint = new URLSearchParams(location.search).get('ably');
const [host, port] = endpoint ? endpoint.split(':') : [];

// One helper and one client for the page (the session is the app's cookie).
const capsign = createCapsign({ url: '/auth', ErrorInfo: Ably.ErrorInfo });
const client = new Ably.Realtime({
  ...(endpoint ? { restHost: host, realtimeHost: host, port: Number(port), tls: false, useBinaryProtocol: false } : {}),
  authCallback: capsign.authCallback,
});

/** Acquires `ops` on `channel` before it is used: 'pending', 'granted', or the refusal. */
function useGrant(channel, ops) {
  const ably = useAbly();
  const [state, setState] = useState({ status: 'pending' });
  const key = ops.join(',');
  useEffect(() => {
    let live = true;
    capsign.withAcquire(ably, channel, ops, async () => undefined).then(
      () => live && setState({ status: 'granted' }),
      (error) => live && setState({ status: 'refused', error }),
    );
    return () => {
      live = false;
    };
  }, [ably, channel, key]);
  return state;
}

function Messages({ name }) {
  const [messages, setMessages] = useState([]);
  const { publish } = useChannel(name, (message) => setMessages((m) => [...m, message.data]));
  return (
    <li className="granted" data-channel={name}>
      {name}{' '}
      <button onClick={() => publish('m', `hello ${name}`)}>say hello</button>
      <span className="messages">{messages.join(' · ')}</span>
    </li>
  );
}

function Room({ name }) {
  const grant = useGrant(name, ['subscribe', 'publish']);
  if (grant.status === 'pending') return <li data-channel={name}>{name}: asking…</li>;
  if (grant.status === 'refused') {
    return <li className="refused" data-channel={name}>{name}: refused ({grant.error.code})</li>;
  }
  return (
    <ChannelProvider channelName={name}>
      <Messages name={name} />
    </ChannelProvider>
  );
}

function App() {
  const [connection, setConnection] = useState(client.connection.state);
  useConnectionStateListener((change) => setConnection(change.current));
  const rooms = ['chat:react-1', 'chat:react-2', 'doc:react-3', 'admin:react'];
  return (
    <main>
      <h1>Rooms</h1>
      <p>Connection: <code id="connection">{connection}</code></p>
      <ul>{rooms.map((name) => <Room key={name} name={name} />)}</ul>
    </main>
  );
}

window.capsignExample = { capsign, client };
createRoot(document.getElementById('root')).render(
  <StrictMode>
    <AblyProvider client={client}>
      <App />
    </AblyProvider>
  </StrictMode>,
);
