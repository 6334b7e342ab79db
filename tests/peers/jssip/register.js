// JsSIP (npm "jssip") under Node as a real WebSocket SIP client (RFC 7118) for the tests of
// tests/signaling/test_websocket_client.py.
//
// usage: [SIP_PASSWORD=...] node register.js WS_URL SIP_URI
//
// With SIP_PASSWORD in the environment (never on the command line: ps shows arguments) JsSIP
// answers the registrar's digest challenge (RFC 3261 section 22.2).
// Registers SIP_URI over WS_URL and prints one JSON line per outcome on stdout:
//   {"event": "registered", "status": 200, "contact": "<the Contact JsSIP sent>"}
//   {"event": "registrationFailed", "status": 403, "cause": "..."}   (exit status 1)
// After "registered" it keeps the connection open until its stdin is closed, then exits
// WITHOUT unregistering: the WebSocket connection just goes away, as when a browser tab is
// closed, so the server must remove the binding itself (RFC 7118 section 5).
'use strict';

// JsSIP speaks the browser WebSocket API; the "ws" package provides it under Node.
global.WebSocket = require('ws');
const JsSIP = require('jssip');

// No answer within this long is a failure of the server (the test's own timeout is longer).
const REGISTER_TIMEOUT_MS = 10000;

const [url, uri] = process.argv.slice(2);
if (!url || !uri) {
  console.error('usage: node register.js WS_URL SIP_URI');
  process.exit(2);
}

function report(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const socket = new JsSIP.WebSocketInterface(url);
const ua = new JsSIP.UA({
  sockets: [socket],
  uri: uri,
  register: true,
  register_expires: 600,
  password: process.env.SIP_PASSWORD || undefined,
  connection_recovery_min_interval: 60,  // no reconnect while the test watches
  connection_recovery_max_interval: 60,
});

const timer = setTimeout(() => {
  report({ event: 'timeout' });
  process.exit(3);
}, REGISTER_TIMEOUT_MS);

ua.on('registered', (e) => {
  clearTimeout(timer);
  const contact = e.response.getHeader('Contact') || '';
  report({ event: 'registered', status: e.response.status_code, contact: contact,
           sent_contact: ua.contact.toString() });
  process.stdin.resume();
  process.stdin.on('end', () => process.exit(0));  // abrupt: no un-REGISTER
});

ua.on('registrationFailed', (e) => {
  clearTimeout(timer);
  report({ event: 'registrationFailed', status: e.response ? e.response.status_code : null,
           cause: String(e.cause) });
  process.exit(1);
});

ua.start();
