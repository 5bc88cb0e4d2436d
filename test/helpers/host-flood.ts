// A hostile hostNetwork pod's client, run as its own process so the kernel records the pod's
// cgroup on every socket it opens (see cgroups.ts). Bounded in count and time. Usage:
//   node host-flood.ts '{"port":N,"count":40,"bytes":"GET ...","holdMs":4000}'
//     opens `count` connections one after another, writes `bytes` on each, keeps them `holdMs`;
//   add "loops":12 to reconnect instead: each loop reopens its connection as soon as the
//     daemon closes it, until `holdMs` is over (at most `count` connections in all).
// Prints one JSON line: every answer the daemon wrote, and how many connections were opened.
import { connect, type Socket } from 'node:net';
import { parseAnswers, type RawAnswer } from './raw.ts';

const o = JSON.parse(process.argv[2]!) as { port: number; count: number; bytes: string; holdMs: number; loops?: number };
const answers: RawAnswer[] = [];
const sockets: Socket[] = [];
let opened = 0;

/** Resolves once connected (or failed), with the connection's end: a bare promise would be adopted, not returned. */
function open(): Promise<{ closed: Promise<void> }> {
  return new Promise((resolve) => {
    opened++;
    const socket = connect({ host: '127.0.0.1', port: o.port });
    sockets.push(socket);
    let data = '';
    socket.on('data', (d: Buffer) => { data += d.toString('latin1'); });
    const closed = new Promise<void>((done) => socket.once('close', () => { answers.push(...parseAnswers(data)); done(); }));
    socket.on('error', () => {});
    socket.once('connect', () => { socket.write(o.bytes); resolve({ closed }); });
    socket.once('error', () => resolve({ closed }));
  });
}

const until = Date.now() + o.holdMs;
const timeLeft = (): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, until - Date.now())));
if (o.loops === undefined) {
  for (let i = 0; i < o.count; i++) await open();
  await timeLeft();
} else {
  await Promise.all(Array.from({ length: o.loops }, async () => {
    while (Date.now() < until && opened < o.count) await Promise.race([(await open()).closed, timeLeft()]);
  }));
}
await Promise.all(sockets.map((s) => new Promise<void>((r) => { if (s.destroyed) r(); else { s.once('close', () => r()); s.destroy(); } })));
process.stdout.write(`${JSON.stringify({ opened, answers })}\n`);
