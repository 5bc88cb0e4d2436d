// The baseline for bench/imds-budget.bench.ts: a forwarding proxy with no pacing and no
// cache, as NMI was (and this daemon before its IMDS budget). Every request goes straight
// to IMDS; a 429 gains `Retry-After: 1`, as the daemon used to add. GET /stats counts
// IMDS's answers by status. Usage: node bench/naive-proxy.ts LISTEN_PORT IMDS_PORT
import { createServer } from 'node:http';
import { Pool } from 'undici';

const [listenPort, imdsPort] = process.argv.slice(2).map(Number);
const pool = new Pool(`http://127.0.0.1:${imdsPort}`, { connections: 1024, pipelining: 1 });
const upstream = new Map<number, number>();

const server = createServer(async (req, res) => {
  if (req.url === '/stats') {
    res.end(JSON.stringify(Object.fromEntries(upstream)));
    return;
  }
  try {
    const r = await pool.request({ method: 'GET', path: req.url ?? '/', headers: { metadata: 'true' } });
    const body = Buffer.from(await r.body.arrayBuffer());
    upstream.set(r.statusCode, (upstream.get(r.statusCode) ?? 0) + 1);
    const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': body.length };
    const retryAfter = r.headers['retry-after'] ?? (r.statusCode === 429 ? '1' : undefined);
    if (retryAfter !== undefined) headers['retry-after'] = String(retryAfter);
    res.writeHead(r.statusCode, headers).end(body);
  } catch {
    res.writeHead(503, { 'retry-after': '2' }).end();
  }
});
server.maxConnections = 4096;
server.listen(listenPort, '127.0.0.1', () => console.log('naive proxy listening'));
