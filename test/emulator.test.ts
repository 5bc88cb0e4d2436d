import t from 'tap';
import { Agent, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  decodeFakeToken,
  runEmulatorCli,
  startImdsEmulator,
} from '../src/emulator/imds-emulator.ts';
import type { EmulatedIdentity, EmulatorOptions, ImdsEmulator } from '../src/emulator/imds-emulator.ts';
import { eventually } from './helpers/eventually.ts';

const SYSTEM: EmulatedIdentity = {
  clientID: 'aaaaaaaa-0000-4000-8000-000000000000',
  objectID: 'aaaaaaaa-1111-4000-8000-000000000000',
  resourceID: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/vmss',
};
const ONE: EmulatedIdentity = {
  clientID: '11111111-1111-4111-8111-111111111111',
  objectID: '11111111-0000-4000-8000-0b0b0b0b0001',
  resourceID: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/one',
};
const TWO: EmulatedIdentity = {
  clientID: '22222222-2222-4222-8222-222222222222',
  objectID: '22222222-0000-4000-8000-0b0b0b0b0002',
  resourceID: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/two',
};

const MD = { Metadata: 'true' };
const TOKEN = '/metadata/identity/oauth2/token';
const Q = 'api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F';
const TOKEN_KEYS = [
  'access_token',
  'client_id',
  'expires_in',
  'expires_on',
  'ext_expires_in',
  'not_before',
  'resource',
  'token_type',
];

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  json: unknown;
}

interface CallOptions {
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  timeoutMs?: number;
  agent?: Agent;
}

/** One HTTP call with the raw path as given: no client-side normalisation or encoding. */
function call(emu: { host: string; port: number }, path: string, o: CallOptions = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: emu.host,
        port: emu.port,
        path,
        method: o.method ?? 'GET',
        headers: o.headers ?? MD,
        agent: o.agent ?? false,
        timeout: o.timeoutMs ?? 5000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('timeout', () => req.destroy(Object.assign(new Error('client timeout'), { code: 'CLIENT_TIMEOUT' })));
    req.on('error', reject);
    req.end(o.body);
  });
}

/** Only what the helpers need from a tap test. */
interface HasTeardown {
  teardown(fn: () => unknown): void;
}

async function emulator(t: HasTeardown, opts: Partial<EmulatorOptions> = {}): Promise<ImdsEmulator> {
  const emu = await startImdsEmulator({ identities: [ONE, TWO], systemAssigned: SYSTEM, ...opts });
  t.teardown(() => emu.close());
  return emu;
}

/** Bounded generously (a loaded machine is slow), named by the condition's own text. */
const waitFor = (cond: () => boolean | Promise<boolean>): Promise<number> => eventually(cond, cond.toString(), undefined, 5);

const err = (description: string, error = 'invalid_request') => ({ error, error_description: description });

t.test('metadata header', async (t) => {
  const emu = await emulator(t);
  const want = err('Required metadata header not specified');
  // The @azure/identity probe: token path, no query, no header.
  const probe = await call(emu, TOKEN, { headers: {} });
  t.equal(probe.status, 400);
  t.strictSame(probe.json, want);
  t.equal(probe.headers['content-type'], 'application/json; charset=utf-8');
  // Probes with a full query but no header are refused the same way.
  t.strictSame((await call(emu, `${TOKEN}?${Q}&client_id=${ONE.clientID}`, { headers: {} })).json, want);
  const wrong = await call(emu, `${TOKEN}?${Q}`, { headers: { Metadata: 'false' } });
  t.equal(wrong.status, 400);
  t.strictSame(wrong.json, want);
  const inst = await call(emu, '/metadata/instance?api-version=2021-02-01', { headers: {} });
  t.equal(inst.status, 400);
  t.strictSame(inst.json, want);
  const versions = await call(emu, '/metadata/versions', { headers: {} });
  t.equal(versions.status, 400);
  t.strictSame(versions.json, want);
});

t.test('token request validation', async (t) => {
  const emu = await emulator(t);
  const cases: Array<[string, string, Record<string, string>, unknown]> = [
    ['missing resource', `${TOKEN}?api-version=2018-02-01`, MD, err('Required query variable resource is missing')],
    ['empty resource', `${TOKEN}?api-version=2018-02-01&resource=`, MD, err('Required query variable resource is missing')],
    ['missing api-version', `${TOKEN}?resource=https://vault.azure.net`, MD, err('Required query variable api-version is missing')],
    ['duplicate resource', `${TOKEN}?${Q}&resource=https://vault.azure.net`, MD, err('Duplicate query parameter resource')],
    ['duplicate api-version', `${TOKEN}?api-version=2018-02-01&${Q}`, MD, err('Duplicate query parameter api-version')],
    ['duplicate client_id', `${TOKEN}?${Q}&client_id=${ONE.clientID}&client_id=${ONE.clientID}`, MD, err('Duplicate query parameter client_id')],
    ['malformed escape', `${TOKEN}?${Q}&client_id=%zz`, MD, err('Malformed query string')],
    [
      'client_id and msi_res_id',
      `${TOKEN}?${Q}&client_id=${ONE.clientID}&msi_res_id=${ONE.resourceID}`,
      MD,
      err('Only one of client_id, object_id, msi_res_id (mi_res_id) may be specified'),
    ],
    [
      'msi_res_id and mi_res_id',
      `${TOKEN}?${Q}&mi_res_id=${ONE.resourceID}&msi_res_id=${ONE.resourceID}`,
      MD,
      err('Only one of client_id, object_id, msi_res_id (mi_res_id) may be specified'),
    ],
    [
      'object_id and client_id',
      `${TOKEN}?${Q}&object_id=${ONE.objectID}&client_id=${ONE.clientID}`,
      MD,
      err('Only one of client_id, object_id, msi_res_id (mi_res_id) may be specified'),
    ],
    [
      'x-forwarded-for',
      `${TOKEN}?${Q}`,
      { ...MD, 'X-Forwarded-For': '10.0.0.7' },
      err('Request contains an X-Forwarded-For header; IMDS is not meant to be used through a proxy'),
    ],
    ['unknown client_id', `${TOKEN}?${Q}&client_id=33333333-3333-4333-8333-333333333333`, MD, err('Identity not found')],
    ['unknown object_id', `${TOKEN}?${Q}&object_id=nope`, MD, err('Identity not found')],
    ['unknown msi_res_id', `${TOKEN}?${Q}&msi_res_id=/subscriptions/s/x`, MD, err('Identity not found')],
    ['unknown mi_res_id', `${TOKEN}?${Q}&mi_res_id=/subscriptions/s/x`, MD, err('Identity not found')],
  ];
  for (const [name, path, headers, want] of cases) {
    const a = await call(emu, path, { headers });
    t.equal(a.status, 400, `${name}: status`);
    t.strictSame(a.json, want, `${name}: body`);
    t.equal(a.headers['content-type'], 'application/json; charset=utf-8', `${name}: content type`);
  }
  // X-Forwarded-For is refused on other routes too.
  const inst = await call(emu, '/metadata/instance?api-version=2021-02-01', { headers: { ...MD, 'X-Forwarded-For': '1.2.3.4' } });
  t.equal(inst.status, 400);
  // Duplicates are refused on other routes too.
  const dup = await call(emu, '/metadata/instance?api-version=2021-02-01&api-version=2021-02-01');
  t.equal(dup.status, 400);
  t.strictSame(dup.json, err('Duplicate query parameter api-version'));
});

t.test('token success by each selector', async (t) => {
  const clock = 1_699_913_601_000;
  const emu = await emulator(t, { now: () => clock });
  const cases: Array<[string, string, EmulatedIdentity]> = [
    ['client_id', `&client_id=${TWO.clientID}`, TWO],
    ['client_id in upper case', `&client_id=${TWO.clientID.toUpperCase()}`, TWO],
    ['msi_res_id', `&msi_res_id=${encodeURIComponent(ONE.resourceID)}`, ONE],
    ['msi_res_id unencoded', `&msi_res_id=${ONE.resourceID}`, ONE],
    ['mi_res_id', `&mi_res_id=${encodeURIComponent(TWO.resourceID)}`, TWO],
    ['object_id', `&object_id=${ONE.objectID}`, ONE],
    ['no selector: system-assigned', '', SYSTEM],
    ['empty selector counts as absent', '&client_id=', SYSTEM],
    ['client_id of the system-assigned identity', `&client_id=${SYSTEM.clientID}`, SYSTEM],
  ];
  let n = 0;
  for (const [name, extra, want] of cases) {
    const a = await call(emu, `${TOKEN}?${Q}${extra}`);
    t.equal(a.status, 200, `${name}: status`);
    t.equal(a.headers['content-type'], 'application/json; charset=utf-8', `${name}: content type`);
    const body = a.json as Record<string, unknown>;
    t.strictSame(Object.keys(body), TOKEN_KEYS, `${name}: key order`);
    for (const k of TOKEN_KEYS) t.equal(typeof body[k], 'string', `${name}: ${k} is a string`);
    t.equal(body['client_id'], want.clientID, `${name}: client_id`);
    t.equal(body['expires_in'], '86399');
    t.equal(body['ext_expires_in'], '86399');
    t.equal(body['expires_on'], '1700000000');
    t.equal(body['not_before'], '1699913600');
    t.equal(body['resource'], 'https://management.azure.com/');
    t.equal(body['token_type'], 'Bearer');
    n++;
    t.strictSame(
      decodeFakeToken(body['access_token'] as string),
      {
        client_id: want.clientID,
        oid: want.objectID,
        mi_res_id: want.resourceID,
        aud: 'https://management.azure.com/',
        iat: 1_699_913_601,
        exp: 1_700_000_000,
        n,
      },
      `${name}: token claims`,
    );
  }
  t.equal(decodeFakeToken('eyJhbGciOi.x.y'), undefined);
});

t.test('no selector without a system-assigned identity', async (t) => {
  const two = await startImdsEmulator({ identities: [ONE, TWO] });
  t.teardown(() => two.close());
  const a = await call(two, `${TOKEN}?${Q}`);
  t.equal(a.status, 400);
  t.strictSame(a.json, err('Identity not found'));

  const one = await startImdsEmulator({ identities: [TWO] });
  t.teardown(() => one.close());
  const b = await call(one, `${TOKEN}?${Q}`);
  t.equal(b.status, 200);
  t.equal((b.json as Record<string, string>)['client_id'], TWO.clientID);

  const none = await startImdsEmulator({ identities: [] });
  t.teardown(() => none.close());
  t.strictSame((await call(none, `${TOKEN}?${Q}`)).json, err('Identity not found'));
});

t.test('resource is echoed exactly', async (t) => {
  const emu = await emulator(t);
  const cases: Array<[string, string]> = [
    ['resource=https://vault.azure.net', 'https://vault.azure.net'],
    ['resource=https%3A%2F%2Fvault.azure.net', 'https://vault.azure.net'],
    ['resource=https%3a%2f%2fvault.azure.net%2f', 'https://vault.azure.net/'],
    ['resource=api://8f2e-app/with%20space', 'api://8f2e-app/with space'],
    ['resource=https://storage.azure.com/&client_id=' + ONE.clientID, 'https://storage.azure.com/'],
  ];
  for (const [query, want] of cases) {
    // Parameter order varies by SDK: put api-version last here.
    const a = await call(emu, `${TOKEN}?${query}&api-version=2018-02-01`);
    t.equal(a.status, 200, query);
    const body = a.json as Record<string, string>;
    t.equal(body['resource'], want, `${query}: echoed`);
    t.equal(decodeFakeToken(body['access_token'] ?? '')?.aud, want, `${query}: audience`);
  }
});

t.test('path matching', async (t) => {
  const emu = await emulator(t);
  for (const path of ['/METADATA/identity/oauth2/token', '/MetaData/identity/oauth2/token', `${TOKEN}/`]) {
    const a = await call(emu, `${path}?${Q}`);
    t.equal(a.status, 200, path);
  }
  const notFound = err('The requested path was not found', 'not_found');
  for (const path of [
    '/metadata/IDENTITY/oauth2/token',
    `${TOKEN}//`,
    '/metadata/identity/oauth2%2Ftoken',
    '/metadata/identity/oauth2/tokenx',
    '/metadata/identity',
    '/metadata',
    '/metadata/',
    '/',
    '/metadataX/identity/oauth2/token',
    '/metadata/instance//compute',
    '/metadata/instance/compute/nosuchkey',
  ]) {
    const a = await call(emu, `${path}?${Q}`);
    t.equal(a.status, 404, `${path}: status`);
    t.strictSame(a.json, notFound, `${path}: body`);
  }
  // An absolute-form target (as sent to a forward proxy) is refused. The connection itself
  // goes to the emulator on loopback; the address in the target is only text.
  const absolute = await call(emu, `http://169.254.169.254${TOKEN}?${Q}`);
  t.equal(absolute.status, 400);
  t.strictSame(absolute.json, err('Request target must be a path'));
  const post = await call(emu, `${TOKEN}?${Q}`, { method: 'POST', body: '' });
  t.equal(post.status, 405);
  t.equal(post.headers['allow'], 'GET');
  t.strictSame(post.json, err('Method POST is not allowed on this path', 'method_not_allowed'));
  const del = await call(emu, '/metadata/scheduledevents?api-version=2020-07-01', { method: 'DELETE' });
  t.equal(del.status, 405);
  t.equal(del.headers['allow'], 'GET, POST');
  const put = await call(emu, '/metadata/instance?api-version=2021-02-01', { method: 'PUT', body: '{}' });
  t.equal(put.status, 405);
});

t.test('other routes', async (t) => {
  const emu = await emulator(t, { tenantId: 'tenant-123' });
  const v = '?api-version=2021-02-01';

  const inst = await call(emu, `/metadata/instance${v}`);
  t.equal(inst.status, 200);
  t.equal(inst.headers['content-type'], 'application/json; charset=utf-8');
  const doc = inst.json as { compute: Record<string, unknown>; network: unknown };
  t.equal(doc.compute['location'], 'westeurope');
  t.ok(doc.network);

  const compute = await call(emu, `/METADATA/instance/compute/${v}`);
  t.equal(compute.status, 200);
  t.strictSame(compute.json, doc.compute);

  const leaf = await call(emu, `/metadata/instance/compute/location${v}&format=text`);
  t.equal(leaf.status, 200);
  t.equal(leaf.text, 'westeurope');
  t.match(leaf.headers['content-type'], /^text\/plain/);
  t.equal((await call(emu, `/metadata/instance/compute/location${v}`)).json, 'westeurope');
  const ip = await call(emu, `/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress${v}&format=text`);
  t.equal(ip.text, '10.224.0.4');
  t.equal((await call(emu, `/metadata/instance/network/interface/7${v}`)).status, 404);

  const noVersion = await call(emu, '/metadata/instance');
  t.equal(noVersion.status, 400);
  t.strictSame(noVersion.json, err('Required query variable api-version is missing'));
  for (const path of ['/metadata/attested/document', '/metadata/identity/info', '/metadata/scheduledevents', '/metadata/loadbalancer']) {
    t.equal((await call(emu, path)).status, 400, `${path} needs api-version`);
  }

  const attested = await call(emu, `/metadata/attested/document${v}&nonce=12345`);
  t.equal(attested.status, 200);
  const att = attested.json as Record<string, string>;
  t.equal(att['encoding'], 'pkcs7');
  t.match(att['signature'], /^[A-Za-z0-9+/=]+$/);

  const info = await call(emu, `/metadata/identity/info${v}`);
  t.equal(info.status, 200);
  t.strictSame(info.json, { tenantId: 'tenant-123' });

  const events = await call(emu, `/metadata/scheduledevents${v}`);
  t.equal(events.status, 200);
  t.strictSame(events.json, { DocumentIncarnation: 1, Events: [] });
  const ack = await call(emu, `/metadata/scheduledevents${v}`, {
    method: 'POST',
    headers: { ...MD, 'Content-Type': 'application/json' },
    body: JSON.stringify({ StartRequests: [{ EventId: 'f020ba2e-3bc0-4c40-a10b-86575a9eabd5' }] }),
  });
  t.equal(ack.status, 200);
  const badAck = await call(emu, `/metadata/scheduledevents${v}`, { method: 'POST', body: '{not json' });
  t.equal(badAck.status, 400);
  t.strictSame(badAck.json, err('Request body is not valid JSON'));
  const bigAck = await call(emu, `/metadata/scheduledevents${v}`, { method: 'POST', body: 'x'.repeat(70 * 1024) });
  t.equal(bigAck.status, 413);

  const lb = await call(emu, `/metadata/loadbalancer${v}`);
  t.equal(lb.status, 200);
  t.strictSame(lb.json, { loadbalancer: { publicIpAddresses: [], inboundRules: [], outboundRules: [] } });

  const versions = await call(emu, '/metadata/versions');
  t.equal(versions.status, 200);
  t.ok((versions.json as { apiVersions: string[] }).apiVersions.includes('2018-02-01'));
});

t.test('429: concurrency limit with token latency', async (t) => {
  const emu = await emulator(t, { rateLimit: { perSecond: 100, concurrent: 2 }, tokenLatencyMs: 1000 });
  const first = [call(emu, `${TOKEN}?${Q}`), call(emu, `${TOKEN}?${Q}`)];
  await waitFor(() => emu.requests.length === 2);
  const third = await call(emu, `${TOKEN}?${Q}`);
  t.equal(third.status, 429);
  t.strictSame(third.json, err('Too many concurrent requests for managed identity tokens; retry later', 'too_many_requests'));
  t.equal(third.headers['content-type'], 'application/json; charset=utf-8');
  // Identity requests only: other routes are never throttled.
  t.equal((await call(emu, '/metadata/instance?api-version=2021-02-01')).status, 200);
  const done = await Promise.all(first);
  t.strictSame(done.map((a) => a.status), [200, 200]);
  // The slots are free again once the answers went out.
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 200);
});

t.test('429: a client that gives up frees its slot', async (t) => {
  const emu = await emulator(t, { rateLimit: { perSecond: 100, concurrent: 1 }, tokenLatencyMs: 400 });
  await t.rejects(call(emu, `${TOKEN}?${Q}`, { timeoutMs: 50 }), { code: 'CLIENT_TIMEOUT' });
  // The server sees the close asynchronously; bounded wait until the slot is released.
  let status = 0;
  await eventually(async () => (status = (await call(emu, `${TOKEN}?${Q}`)).status) === 200, 'the slot released', undefined, 20);
  t.equal(status, 200);
});

t.test('429: per-second limit with an injected clock', async (t) => {
  let clock = 1_000_000;
  const emu = await emulator(t, { rateLimit: { perSecond: 3, concurrent: 10 }, now: () => clock });
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 200, 'request 1 at t0');
  clock += 500;
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 200, 'request 2 at t0+500');
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 200, 'request 3 at t0+500');
  const over = await call(emu, `${TOKEN}?${Q}`);
  t.equal(over.status, 429);
  t.strictSame(over.json, err('Too many requests for managed identity tokens; retry later', 'too_many_requests'));
  // Refused requests do not count, and the window slides.
  clock += 499;
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 429, 'request 1 is still within the second');
  clock += 1;
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 200, 'request 1 left the window');
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 429, 'requests 2 and 3 are still in it');
  clock += 500;
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 200, 'requests 2 and 3 left it');
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 200);
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 429);
  // Invalid requests are answered 400, not 429, and do not count.
  t.equal((await call(emu, `${TOKEN}?api-version=2018-02-01`)).status, 400);
  t.equal((await call(emu, TOKEN, { headers: {} })).status, 400);
});

t.test('default rate limit is 20 per second; false disables it', async (t) => {
  const clock = 5_000_000;
  const limited = await emulator(t, { now: () => clock });
  const agent = new Agent({ keepAlive: true, maxSockets: 4 });
  t.teardown(() => agent.destroy());
  const statuses: number[] = [];
  for (let i = 0; i < 21; i++) statuses.push((await call(limited, `${TOKEN}?${Q}`, { agent })).status);
  t.equal(statuses.filter((s) => s === 200).length, 20);
  t.equal(statuses[20], 429);

  const free = await emulator(t, { now: () => clock, rateLimit: false });
  const all = await Promise.all(Array.from({ length: 30 }, () => call(free, `${TOKEN}?${Q}`, { agent })));
  t.ok(all.every((a) => a.status === 200), '30 at once, none refused');
});

t.test('faults', async (t) => {
  const emu = await emulator(t);

  emu.setFault({ kind: 'status', status: 503, body: '{"error":"unavailable"}', headers: { 'Retry-After': '2' } }, { times: 2 });
  for (let i = 0; i < 2; i++) {
    const a = await call(emu, `${TOKEN}?${Q}`);
    t.equal(a.status, 503);
    t.equal(a.text, '{"error":"unavailable"}');
    t.equal(a.headers['retry-after'], '2');
  }
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 200, 'fault used up after 2');

  emu.setFault({ kind: 'status', status: 410 });
  const gone = await call(emu, `${TOKEN}?${Q}`);
  t.equal(gone.status, 410);
  t.strictSame(gone.json, { error: 'emulated_fault', error_description: 'Injected status 410' });
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 410, 'without times it stays');
  t.equal((await call(emu, '/metadata/instance?api-version=2021-02-01')).status, 200, 'token requests only');
  t.equal((await call(emu, TOKEN, { headers: {} })).status, 400, 'an invalid request is judged first');
  emu.setFault(undefined);
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 200, 'cleared');

  emu.setFault({ kind: 'slow', delayMs: 300 }, { times: 1 });
  // Headers are held too: a client with a short timeout sees nothing at all.
  await t.rejects(call(emu, `${TOKEN}?${Q}`, { timeoutMs: 100 }), { code: 'CLIENT_TIMEOUT' });
  emu.setFault({ kind: 'slow', delayMs: 300 }, { times: 1 });
  const started = Date.now();
  const slow = await call(emu, `${TOKEN}?${Q}`);
  t.equal(slow.status, 200);
  t.ok(Date.now() - started >= 280, 'held about 300 ms');

  emu.setFault({ kind: 'reset' }, { times: 1 });
  await t.rejects(call(emu, `${TOKEN}?${Q}`), { code: 'ECONNRESET' });
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 200, 'only once');

  emu.setFault({ kind: 'reset' }, { times: 0 });
  t.equal((await call(emu, `${TOKEN}?${Q}`)).status, 200, 'times: 0 means no fault');
});

t.test('recording', async (t) => {
  let clock = 42;
  const emu = await emulator(t, { now: () => clock });
  await call(emu, `/METADATA/identity/oauth2/token?${Q}&client_id=${ONE.clientID}`, {
    headers: { ...MD, 'X-Probe': 'yes' },
  });
  clock = 43;
  await call(emu, '/nope', { method: 'DELETE', headers: {} });
  t.equal(emu.requests.length, 2);
  const [a, b] = emu.requests;
  t.equal(a?.method, 'GET');
  t.equal(a?.url, `/METADATA/identity/oauth2/token?${Q}&client_id=${ONE.clientID}`);
  t.equal(a?.headers['metadata'], 'true');
  t.equal(a?.headers['x-probe'], 'yes');
  t.equal(a?.remoteAddress, '127.0.0.1');
  t.equal(a?.at, 42);
  t.equal(b?.method, 'DELETE');
  t.equal(b?.url, '/nope');
  t.equal(b?.at, 43);
});

t.test('recording keeps the last 10,000', async (t) => {
  const emu = await emulator(t);
  const agent = new Agent({ keepAlive: true, maxSockets: 16 });
  t.teardown(() => agent.destroy());
  const total = 10_050;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) {
      const i = next++;
      await call(emu, `/metadata/versions?i=${i}`, { agent });
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  t.equal(emu.requests.length, 10_000);
  const seen = new Set(emu.requests.map((r) => r.url));
  t.notOk(seen.has('/metadata/versions?i=0'), 'the oldest are dropped');
  t.equal(seen.size, 10_000);
});

t.test('close() is prompt with open and in-flight connections', async (t) => {
  const emu = await startImdsEmulator({ identities: [ONE], tokenLatencyMs: 10_000 });
  const agent = new Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  t.equal((await call(emu, '/metadata/versions', { agent })).status, 200, 'a keep-alive socket stays open');
  const inFlight = call(emu, `${TOKEN}?${Q}`).then(
    () => 'answered',
    () => 'failed',
  );
  await waitFor(() => emu.requests.length === 2);
  const started = Date.now();
  await emu.close();
  t.ok(Date.now() - started < 1000, 'closed within a second');
  t.equal(await inFlight, 'failed', 'the held request is cut');
  await emu.close(); // idempotent
  await t.rejects(call(emu, '/metadata/versions', { timeoutMs: 1000 }), { code: 'ECONNREFUSED' });
});

t.test('listening address', async (t) => {
  for (const host of ['169.254.169.254', '10.1.2.3', '0.0.0.0', '::', 'example.com']) {
    await t.rejects(startImdsEmulator({ host, identities: [] }), /non-loopback/, host);
  }
  const emu = await emulator(t, { host: '127.0.0.2' });
  t.equal(emu.host, '127.0.0.2');
  t.equal(emu.url, `http://127.0.0.2:${emu.port}`);
  t.ok(emu.port > 0);
  t.equal((await call(emu, '/metadata/versions')).status, 200);
});

t.test('cli', async (t) => {
  const run = async (argv: string[], signal?: AbortSignal) => {
    const out: string[] = [];
    const errs: string[] = [];
    const io = { stdout: (l: string) => out.push(l), stderr: (l: string) => errs.push(l), ...(signal ? { signal } : {}) };
    const code = runEmulatorCli(argv, io);
    return { code, out, errs };
  };

  const bad = await run(['--bogus']);
  t.equal(await bad.code, 2);
  t.equal(bad.errs.length, 1);
  t.match(bad.errs[0], /--bogus/);
  const badValue = await run(['--rps', 'many']);
  t.equal(await badValue.code, 2);
  t.match(badValue.errs[0], /--rps/);
  const missing = await run(['--listen']);
  t.equal(await missing.code, 2);
  t.match(missing.errs[0], /--listen/);
  const badListen = await run(['--listen', 'nocolon']);
  t.equal(await badListen.code, 2);
  const badBool = await run(['--rate-limit=maybe']);
  t.equal(await badBool.code, 2);
  t.match(badBool.errs[0], /--rate-limit/);

  const help = await run(['--help']);
  t.equal(await help.code, 0);
  t.match(help.out.join('\n'), /--listen HOST:PORT/);

  const refused = await run(['--listen', '10.9.9.9:80']);
  t.equal(await refused.code, 1);
  t.match(refused.errs[0], /non-loopback/);

  const dir = t.testdir({});
  const badFile = join(dir, 'bad.json');
  await writeFile(badFile, JSON.stringify({ identities: [{ clientID: 'x' }] }));
  const badIds = await run(['--identities', badFile]);
  t.equal(await badIds.code, 2);
  t.match(badIds.errs[0], /identities\[0\]\.resourceID/);

  const file = join(dir, 'ids.json');
  await writeFile(file, JSON.stringify({ identities: [TWO], tenantId: 'cli-tenant' }));
  const ac = new AbortController();
  const live = await run(
    ['--listen=127.0.0.1:0', '--identities', file, '--rate-limit=false', '--token-latency-ms', '0'],
    ac.signal,
  );
  await waitFor(() => live.out.length > 0);
  t.equal(live.out.length, 1, 'prints one line');
  const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(live.out[0] ?? '')?.[1];
  t.ok(url, live.out[0] ?? 'no output');
  const target = new URL(url ?? 'http://127.0.0.1:1');
  const emu = { host: target.hostname, port: Number(target.port) };
  const a = await call(emu, `${TOKEN}?${Q}`);
  t.equal(a.status, 200);
  t.equal((a.json as Record<string, string>)['client_id'], TWO.clientID, 'the only identity is used');
  t.strictSame((await call(emu, '/metadata/identity/info?api-version=2021-02-01')).json, { tenantId: 'cli-tenant' });
  ac.abort();
  t.equal(await live.code, 0);
  t.equal(live.errs.length, 0);
});

t.test('cli stops on SIGTERM', async (t) => {
  const entry = fileURLToPath(new URL('../src/emulator/imds-emulator.ts', import.meta.url));
  const script =
    `const { runEmulatorCli } = await import(${JSON.stringify(entry)});` +
    `process.exitCode = await runEmulatorCli(['--listen', '127.0.0.1:0']);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  t.teardown(() => clearTimeout(killer));
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await waitFor(() => stdout.includes('\n') || child.exitCode !== null);
  const url = /(http:\/\/127\.0\.0\.1:\d+)/.exec(stdout)?.[1];
  t.ok(url, `listening line: ${stdout} ${stderr}`);
  const target = new URL(url ?? 'http://127.0.0.1:1');
  t.equal((await call({ host: target.hostname, port: Number(target.port) }, '/metadata/versions')).status, 200);
  child.kill('SIGTERM');
  t.equal(await exited, 0, stderr);
});
