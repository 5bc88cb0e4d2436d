// The at-once lane changes no answer and no report: the same requests, from the same pods, to a
// daemon with the lane and to one without, get the same status, headers and body, and leave the
// same metrics and log lines. Every request goes on a kept-alive connection of its pod, as SDKs
// send them, so that the lane takes what it can.
import t, { type Test } from 'tap';
import { IDS, startStack, TOKEN, type Stack } from './helpers/stack.ts';
import { openRaw, parseAnswers, type RawAnswer } from './helpers/raw.ts';
import { eventually } from './helpers/eventually.ts';

const CORPUS: ReadonlyArray<{ from: string; head: string }> = (() => {
  const get = (target: string, headers = 'Metadata: true\r\n'): string => `GET ${target} HTTP/1.1\r\nHost: 169.254.169.254\r\n${headers}\r\n`;
  const out: Array<{ from: string; head: string }> = [];
  const add = (from: string, head: string, times = 1): void => { for (let i = 0; i < times; i++) out.push({ from, head }); };
  add('127.0.0.10', get(TOKEN), 3); // a miss, then hits
  add('127.0.0.13', get(TOKEN), 2);
  add('127.0.0.10', get(`${TOKEN}&client_id=${IDS.reader!.clientID}`), 2);
  add('127.0.0.10', get(`${TOKEN}&client_id=${IDS.agent!.clientID}`)); // not bound to the pod
  add('127.0.0.10', get(TOKEN.replace('vault.azure.net', 'management.azure.com%2F')), 2);
  add('127.0.0.11', get(TOKEN), 2); // unlabelled
  add('127.0.0.12', get(TOKEN), 2); // an exception: passed through
  add('127.0.0.14', get(TOKEN), 2); // two pods on the address
  add('127.0.0.15', get(TOKEN)); // a pod of another node: waited for, then unknown
  add('127.0.0.10', get('/metadata/identity/oauth2/token', ''), 2); // the SDK probe
  add('127.0.0.10', get(TOKEN, 'Metadata: false\r\n'));
  add('127.0.0.10', get(TOKEN, 'metadata: TRUE\r\n'));
  add('127.0.0.10', get(TOKEN, 'Metadata: true\r\nX-Forwarded-For: 10.0.0.1\r\n'));
  add('127.0.0.10', get('/metadata/identity/oauth2/token?api-version=2099-01-01&resource=x'));
  add('127.0.0.10', get('/metadata/identity/oauth2/token?resource=x'));
  add('127.0.0.10', get(`${TOKEN}&resource=y`)); // twice
  add('127.0.0.10', get('/metadata/instance?api-version=2021-02-01')); // proxied: node:http's
  add('127.0.0.10', get('/metadata/../x'));
  add('127.0.0.10', get('/foo'));
  add('127.0.0.10', get('/metadata/identity/oauth2/token/'));
  add('127.0.0.10', get(TOKEN, 'Metadata: true\r\nConnection: close\r\n'));
  add('127.0.0.10', `POST ${TOKEN} HTTP/1.1\r\nMetadata: true\r\nContent-Length: 0\r\n\r\n`);
  return out;
})();

/** Each request on its pod's one kept-alive connection (reopened when an answer closed it). */
async function run(t: Test, s: Stack): Promise<RawAnswer[]> {
  const answers: RawAnswer[] = [];
  const open = new Map<string, Awaited<ReturnType<typeof openRaw>>>();
  for (const { from, head } of CORPUS) {
    let c = open.get(from);
    if (c === undefined || c.socket.destroyed || c.socket.readyState !== 'open') {
      c = await openRaw(t, s.port, from);
      open.set(from, c);
    }
    const before = parseAnswers(c.received()).length;
    const conn = c;
    c.socket.write(head);
    await eventually(() => parseAnswers(conn.received()).length > before, `${from} ${head.split('\r\n')[0]}`);
    answers.push(parseAnswers(c.received())[before]!);
    // A closing answer: wait for the close, so the next request opens a new connection.
    if (answers.at(-1)!.headers.connection === 'close') await c.closed;
  }
  for (const c of open.values()) c.socket.destroy();
  return answers;
}

/** What must be the same: a token's own bytes differ between the two emulators, not its shape. */
function comparable(a: RawAnswer): unknown {
  const { date: _date, ...headers } = a.headers;
  if (a.status !== 200) return { status: a.status, headers, body: a.body };
  const { 'content-length': _length, ...rest } = headers;
  return { status: a.status, headers: rest, fields: Object.keys(a.json ?? {}).sort(), resource: a.json?.resource, client_id: a.json?.client_id };
}

const series = (metrics: string, name: string): string[] => metrics.split('\n').filter((l) => l.startsWith(name)).sort();
/** A log line without what differs from run to run. */
const normal = (line: string): string => {
  const { time: _t, ms: _ms, req: _req, pid: _pid, hostname: _h, ...rest } = JSON.parse(line) as Record<string, unknown>;
  return JSON.stringify(rest);
};

t.test('the same answers, metrics and log lines with the lane as without it', async (t) => {
  const withLane = await startStack(t);
  const without = await startStack(t, { daemon: { answerAtOnce: false } });
  const ours = await run(t, withLane);
  const theirs = await run(t, without);
  t.equal(ours.length, CORPUS.length);
  for (const [i, { from, head }] of CORPUS.entries()) {
    t.same(comparable(ours[i]!), comparable(theirs[i]!), `${from} ${head.split('\r\n')[0]}`);
  }
  const m1 = await withLane.metrics();
  const m2 = await without.metrics();
  for (const name of ['podid_nmi_requests_total', 'podid_nmi_token_cache_total', 'aadpodidentity_nmi_operations_duration_seconds_count', 'podid_nmi_request_duration_seconds_count']) {
    t.same(series(m1, name), series(m2, name), name);
  }
  const lines = (s: Stack): string[] => s.logs.filter((l) => l.includes('"req"') || l.includes('refused') || l.includes('suppressed')).map(normal).sort();
  t.same(lines(withLane), lines(without), 'the same log lines');
  // Not vacuous: the lane answered most of the corpus, and the other daemon none.
  const answered = (m: string): number => Number(/podid_nmi_requests_answered_at_once_total (\d+)/.exec(m)?.[1]);
  t.ok(answered(m1) >= CORPUS.length / 2, `the lane answered ${answered(m1)} of ${CORPUS.length}`);
  t.equal(answered(m2), 0, 'without the lane, none');
});
