// The request-path bench's floor: bare node:http serving, per request target, the answers a
// daemon gave (status, headers, body, captured by the bench), with nothing in between. What the
// daemon costs beyond this is the daemon's own work.
// Answers are keyed by `<client address> <target>`, as the same target may be granted to one pod
// and refused to another. Usage: node bench/bare-server.ts LISTEN_PORT ANSWERS_JSON
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

interface Captured { status: number; headers: Record<string, string>; body: string }

const [port, file] = process.argv.slice(2);
const answers = new Map<string, { status: number; headers: Record<string, string>; body: Buffer }>();
for (const [target, a] of Object.entries(JSON.parse(readFileSync(file!, 'utf8')) as Record<string, Captured>)) {
  answers.set(target, { status: a.status, headers: a.headers, body: Buffer.from(a.body, 'base64') });
}

const server = createServer((req, res) => {
  const a = answers.get(`${req.socket.remoteAddress} ${req.url}`);
  if (a === undefined) return void res.writeHead(404).end();
  res.writeHead(a.status, a.headers).end(a.body);
});
server.listen(Number(port), '127.0.0.1', () => console.log('bare server listening'));
