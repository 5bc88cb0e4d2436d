// The IMDS emulator as a process, for the end-to-end test: it binds 169.254.169.254:80 on the
// node namespace's lo, where the daemon reaches it at its default upstream address and where
// any pod packet that escapes interception would land. Every request it receives is printed:
//   stdout: {"event":"ready","url":"..."} once, then
//           {"event":"request","seq":N,"method":"GET","url":"/metadata/...","remoteAddress":"...","headers":{...}}
//   stdin:  {"id":1,"op":"flush"} -> prints any request not yet printed, then {"id":1,"ok":true,"count":TOTAL}
//           {"id":2,"op":"slow","delayMs":D,"times":N} -> the next N token answers wait D ms
// Usage: node imds-process.ts --identities JSON [--host H] [--port P]
//   JSON: {"identities":[{clientID,resourceID,objectID}],"systemAssigned"?:{...}}
// It stops when stdin closes, or on SIGTERM/SIGINT.
import { startImdsEmulator } from '../../src/emulator/imds-emulator.ts';
import type { EmulatedIdentity, RecordedRequest } from '../../src/emulator/imds-emulator.ts';
import { print, serveCommands } from './command-loop.ts';

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(name);
  const value = i === -1 ? fallback : process.argv[i + 1];
  if (value === undefined) {
    process.stderr.write(`missing ${name}\nusage: imds-process.ts --identities JSON [--host H] [--port P]\n`);
    process.exit(2);
  }
  return value;
}


const config = JSON.parse(arg('--identities')) as { identities: EmulatedIdentity[]; systemAssigned?: EmulatedIdentity };
const emulator = await startImdsEmulator({
  host: arg('--host', '169.254.169.254'),
  port: Number(arg('--port', '80')),
  allowNonLoopback: true,
  identities: config.identities,
  ...(config.systemAssigned !== undefined ? { systemAssigned: config.systemAssigned } : {}),
  // The daemon caches tokens, so its own traffic stays far below IMDS's limits; a 429 here
  // would only make the test depend on timing.
  rateLimit: false,
});

// The emulator keeps its requests in an array; print the new ones as they arrive. It keeps the
// last 10,000 only, so count them by identity rather than by index.
let printed = 0;
let lastSeen: RecordedRequest | undefined;
function drain(): void {
  const all = emulator.requests;
  // -1 + 1 = 0 when it was trimmed away: then everything left is newer than it.
  const start = lastSeen === undefined ? 0 : all.lastIndexOf(lastSeen) + 1;
  for (let i = start; i < all.length; i++) {
    const r = all[i]!;
    printed++;
    print({ event: 'request', seq: printed, method: r.method, url: r.url, remoteAddress: r.remoteAddress, headers: r.headers, at: r.at });
  }
  if (all.length > 0) lastSeen = all[all.length - 1];
}
const timer = setInterval(drain, 10);

serveCommands((cmd) => {
  // The next `times` token answers wait `delayMs` (requests in flight at a daemon's shutdown).
  if (cmd.op === 'slow') {
    emulator.setFault({ kind: 'slow', delayMs: Number(cmd.delayMs) }, { times: Number(cmd.times) });
    return {};
  }
  if (cmd.op !== 'flush') throw new Error(`unknown op ${JSON.stringify(cmd.op)}`);
  drain();
  return { count: printed };
}, async () => {
  clearInterval(timer);
  drain();
  await emulator.close();
});

print({ event: 'ready', url: emulator.url });
