// The seed's JavaScript reconnection example, in a web page: only the module, the host and the
// port changed (and `secure`, as the development server speaks plain ws://), plus a line
// printed by each event handler so that you can watch it work (reconnect.html shows them).
//
//   cargo xtask demo --browser      # then open http://127.0.0.1:8700/examples/reconnect.html?port=…
//
// `?host=` and `?port=` point it at a server (the demo's fault proxy, say).
import * as tether from 'tether-browser';

const params = new URLSearchParams(location.search);

// When establishing a session, it is possible to specify whether reconnection
// should be attempted in the event of an unexpected disconnection. This allows
// the session to recover its previous state.

// Set the maximum amount of time we'll try and reconnect for to 10 minutes
const maximumTimeoutDuration = 1000 * 60 * 10;

// Set the maximum interval between reconnect attempts to 60 seconds
const maximumAttemptInterval = 1000 * 60;

// Set an upper limit to the number of times we'll try to reconnect for
const maximumAttempts = 25;

// Count the number of reconnection attempts we've made
let attempts = 0;

// Create a reconnection strategy that applies an exponential back-off
// The strategy will be called with two arguments, start & abort. Both
// of these are functions, which allow the strategy to either start a
// reconnection attempt, or to abort reconnection (which will close the session)
const reconnectionStrategy = (start, abort) => {
    if (attempts > maximumAttempts) {
        abort();
    } else {
        const wait = Math.min(Math.pow(2, attempts++) * 100, maximumAttemptInterval);

        // Wait the specified time period, and then start the reconnection attempt
        setTimeout(start, wait);
    }
};

// Connect to the server.
const session = await tether.connect({
    host : params.get('host') ?? '127.0.0.1',
    port : Number(params.get('port') ?? 8080),
    secure : false,
    principal : 'control',
    credentials : 'password',
    reconnect : {
        timeout : maximumTimeoutDuration,
        strategy : reconnectionStrategy
    }
});
console.log(`connected: session ${session.sessionId}`);

session.on('disconnect', () => {
    // This will be called when we lose connection. Because we've specified the
    // reconnection strategy, it will be called automatically when this event
    // is dispatched
    console.log(`disconnected: session ${session.sessionId}`);
});

session.on('reconnect', () => {
    // If the session is able to reconnect within the reconnect timeout, this
    // event will be dispatched to notify that normal operations may resume
    attempts = 0;
    console.log(`reconnected: session ${session.sessionId}`);
});

session.on('close', () => {
    // If the session is closed normally, or the session is unable to reconnect,
    // this event will be dispatched to notify that the session is no longer
    // operational.
    console.log(`closed: ${session.closeReason}`);
});
