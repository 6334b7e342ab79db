// JsSIP in headless Chromium over secure WebSocket (RFC 7118 over TLS), driven by the test that
// serves this page (tests/signaling/transports/test_wss_chromium.py).
//
// GET config.json: {"wss": "wss://host:port", "domain": "...", "callee": "sip:...",
//                   "users": {"alice": "password", "bob": "password"}}
// Every user registers over WSS with its password (the server challenges, RFC 3261 §22.2).
// "bob", if present, answers any call.  "alice" calls "callee" once everyone is registered,
// hangs up once the call is confirmed, and the page reports each step with a POST of one
// JSON object to /report, which the test reads:
//   {"ua": "alice", "event": "registered"|"registrationFailed"|"disconnected", ...}
//   {"ua": "alice", "event": "accepted", "record_route": [...]}      (the 200 it got)
//   {"ua": "bob", "event": "incoming", "via": "...", "record_route": [...]}  (the INVITE)
//   {"ua": ..., "event": "confirmed"|"ended"|"failed", "cause": "..."}
'use strict';

function report(obj) {
  return fetch('/report', { method: 'POST', body: JSON.stringify(obj) });
}

// A live audio track without a microphone: WebRTC needs one for its offer.
function silence() {
  const ctx = new AudioContext();
  const osc = ctx.createOscillator();
  const dest = ctx.createMediaStreamDestination();
  osc.connect(dest);
  osc.start();
  return dest.stream;
}

function watch(name, session) {
  for (const ev of ['confirmed', 'ended', 'failed']) {
    session.on(ev, (e) => report({ ua: name, event: ev, cause: e && e.cause ? String(e.cause) : null }));
  }
}

function start(cfg, name, password, onRegistered) {
  const ua = new JsSIP.UA({
    sockets: [new JsSIP.WebSocketInterface(cfg.wss)],
    uri: `sip:${name}@${cfg.domain}`,
    password: password,
    register: true,
    register_expires: 600,
    connection_recovery_min_interval: 60,  // no reconnect while the test watches
    connection_recovery_max_interval: 60,
  });
  ua.on('registered', (e) => {
    report({ ua: name, event: 'registered', status: e.response.status_code });
    onRegistered();
  });
  ua.on('registrationFailed', (e) => report({
    ua: name, event: 'registrationFailed',
    status: e.response ? e.response.status_code : null, cause: String(e.cause) }));
  ua.on('disconnected', (e) => report({ ua: name, event: 'disconnected',
                                        cause: e && e.reason ? String(e.reason) : null }));
  ua.on('newRTCSession', (e) => {
    if (e.originator !== 'remote') return;
    const req = e.request;
    report({ ua: name, event: 'incoming', via: req.getHeader('Via'),
             record_route: req.getHeaders('Record-Route'), from: req.from.uri.toString() });
    watch(name, e.session);
    e.session.answer({ mediaStream: silence(), pcConfig: { iceServers: [] } });
  });
  ua.start();
  return ua;
}

async function main() {
  const cfg = await (await fetch('config.json')).json();
  const names = Object.keys(cfg.users);
  let registered = 0;
  const uas = {};
  const ready = () => {
    registered += 1;
    if (registered !== names.length || !uas.alice || !cfg.callee) return;
    const session = uas.alice.call(cfg.callee, {
      mediaStream: silence(), pcConfig: { iceServers: [] },
      eventHandlers: {
        accepted: (e) => report({ ua: 'alice', event: 'accepted', status: e.response.status_code,
                                  record_route: e.response.getHeaders('Record-Route') }),
        confirmed: () => setTimeout(() => session.terminate(), 500),
      },
    });
    watch('alice', session);
  };
  for (const name of names) uas[name] = start(cfg, name, cfg.users[name], ready);
}

main().catch((err) => report({ ua: 'page', event: 'error', cause: String(err) }));
