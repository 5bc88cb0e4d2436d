// A pod's token traffic for the rolling-update test, run inside the pod's namespace. Bounded in
// count and time; stops early when --stop-file appears. Prints one JSON line at the end.
//   --loop: asks for a token every --interval-ms, alternating a fresh connection
//     (Connection: close) and one kept-alive connection.
//   --hold N: opens N kept-alive connections (one request each), then keeps each alive with a
//     request every --ping-ms (under the daemon's 5 s keep-alive timeout); once --slow-file
//     appears, sends --slow K requests for uncached resources on K of them, so that they wait
//     at IMDS. A connection the server closes is replaced by a new one at its next request.
// A request on a reused connection that the server closed before answering (the race every
// HTTP/1.1 client meets at a keep-alive close, RFC 9112 9.3.1) is retried once on a fresh
// connection and counted as `retriedStale`; every other error is a failure.
import { Agent, request } from 'node:http';
import { existsSync } from 'node:fs';

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(name);
  const value = i === -1 ? fallback : process.argv[i + 1];
  if (value === undefined) throw new Error(`missing ${name}`);
  return value;
}
const flag = (name: string): boolean => process.argv.includes(name);

const URL_BASE = 'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=';
const resource = arg('--resource');
const stopFile = arg('--stop-file');
const maxMs = Number(arg('--max-ms', '60000'));
const maxCount = Number(arg('--max-count', '5000'));
const started = Date.now();
const over = (): boolean => existsSync(stopFile) || Date.now() - started > maxMs;

interface Answer { status: number; connection: string | undefined; clientId: string | undefined }
interface Failure { at: number; kind: string; error: string }

const summary = {
  total: 0, ok: 0, fresh: 0, keptAlive: 0, retriedStale: 0, closeHeaders: 0,
  failures: [] as Failure[], slow: { sent: 0, ok: 0, statuses: [] as number[] },
};

function once(url: string, agent: Agent | false, timeoutMs: number): Promise<Answer & { reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, headers: { Metadata: 'true', ...(agent === false ? { connection: 'close' } : {}) }, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => { body += c; });
      res.on('end', () => {
        let clientId: string | undefined;
        try { clientId = (JSON.parse(body) as { client_id?: string }).client_id; } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, clientId, reused: req.reusedSocket });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
    req.on('error', (err) => reject(Object.assign(err, { reused: req.reusedSocket })));
    req.end();
  });
}

async function ask(kind: string, url: string, agent: Agent | false, timeoutMs = 10_000): Promise<Answer | undefined> {
  summary.total++;
  try {
    let a;
    try {
      a = await once(url, agent, timeoutMs);
    } catch (err) {
      if (!(err as { reused?: boolean }).reused) throw err;
      summary.retriedStale++;
      a = await once(url, agent, timeoutMs);
    }
    if (a.connection === 'close' && agent !== false) summary.closeHeaders++;
    if (a.status === 200) summary.ok++;
    else summary.failures.push({ at: Date.now() - started, kind, error: `status ${a.status}` });
    return a;
  } catch (err) {
    summary.failures.push({ at: Date.now() - started, kind, error: err instanceof Error ? `${(err as NodeJS.ErrnoException).code ?? err.name}: ${err.message}` : String(err) });
    return undefined;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

if (flag('--loop')) {
  const interval = Number(arg('--interval-ms', '20'));
  const kept = new Agent({ keepAlive: true, maxSockets: 1 });
  for (let n = 0; n < maxCount && !over(); n++) {
    if (n % 2 === 0) { summary.fresh++; await ask('fresh', URL_BASE + resource, false); }
    else { summary.keptAlive++; await ask('kept-alive', URL_BASE + resource, kept); }
    await sleep(interval);
  }
  kept.destroy();
}

if (flag('--hold')) {
  const n = Number(arg('--hold'));
  const pingMs = Number(arg('--ping-ms', '2000'));
  const slowFile = arg('--slow-file');
  const slowCount = Number(arg('--slow', '0'));
  const agents = Array.from({ length: n }, () => new Agent({ keepAlive: true, maxSockets: 1 }));
  // Opened in waves below the pod's in-flight share (--max-requests-per-pod, 16): each first
  // request on a connection is attested, so a burst of 22 at once would meet the share's 429.
  for (let i = 0; i < agents.length; i += 8) await Promise.all(agents.slice(i, i + 8).map((a) => ask('open', URL_BASE + resource, a)));
  process.stdout.write(`${JSON.stringify({ event: 'holding', connections: n, ok: summary.ok })}\n`);
  let slowSent = false;
  const slow: Array<Promise<unknown>> = [];
  const pings = new Set<Promise<unknown>>();
  while (!over() && summary.total < maxCount) {
    if (!slowSent && existsSync(slowFile)) {
      slowSent = true;
      for (let i = 0; i < slowCount; i++) {
        summary.slow.sent++;
        slow.push(ask('slow', `${URL_BASE}${encodeURIComponent(`https://slow-${i}.${process.pid}.example`)}`, agents[i]!, 20_000).then((a) => {
          if (a?.status === 200) summary.slow.ok++;
          summary.slow.statuses.push(a?.status ?? 0);
        }));
      }
    }
    // Ping the connections not carrying a slow request, spread over the period.
    const step = pingMs / n;
    for (let i = slowSent ? slowCount : 0; i < n && !over(); i++) {
      const ping = ask('ping', URL_BASE + resource, agents[i]!).finally(() => pings.delete(ping));
      pings.add(ping);
      await sleep(step);
      if (!slowSent && existsSync(slowFile)) break;
    }
  }
  await Promise.all([...slow, ...pings]);
  for (const a of agents) a.destroy();
}

process.stdout.write(`${JSON.stringify({ event: 'done', ...summary, failures: summary.failures.slice(0, 50), failureCount: summary.failures.length })}\n`);
