// The ESM entry point's types (index.d.mts): named exports and the default export.
import tether, { connect, constant, type Session } from 'tether-session';

const session: Session = await connect({ url: 'ws://localhost:8080', reconnect: constant(100) });
const same: typeof connect = tether.connect;
void [session.sessionId, same];
