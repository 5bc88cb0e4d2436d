// NMI's series under NMI's names and label names, with label values from closed sets only;
// and the standard process_* / nodejs_* series.
import t from 'tap';
import { Registry } from 'prom-client';
import { DaemonMetrics } from '../src/observability/metrics.ts';
import { KNOWN_RESOURCES, OPERATION_PATHS, resourceLabel } from '../src/observability/nmi-metrics.ts';
import { META } from './helpers/http.ts';
import { IDS, startStack, TOKEN } from './helpers/stack.ts';

const OPS = 'aadpodidentity_nmi_operations_duration_seconds';

/** Every `name{labels}` series line of the exposition (comments dropped). */
function series(text: string): string[] {
  return text.split('\n').filter((l) => l !== '' && !l.startsWith('#')).map((l) => l.slice(0, l.lastIndexOf(' ')));
}

t.test('a grant, a refusal and an IMDS error land in NMI\'s series with NMI\'s labels', async (t) => {
  const s = await startStack(t, { flags: ['--token-cache=false'] });
  t.equal((await s.ask(TOKEN, { from: '127.0.0.10', headers: META })).status, 200);
  t.equal((await s.ask(TOKEN, { from: '127.0.0.11', headers: META })).status, 400);
  // A 400 is final (5xx would be retried inside the IMDS budget).
  s.emulator.setFault({ kind: 'status', status: 400, body: '{"error":"invalid_request","error_description":"Identity not found"}' }, { times: 1 });
  t.equal((await s.ask(TOKEN, { from: '127.0.0.10', headers: META })).status, 400);
  t.equal((await s.ask('/metadata/instance?api-version=2021-02-01', { from: '127.0.0.10', headers: META })).status, 200);
  t.equal((await s.ask('/nope', { from: '127.0.0.10', headers: META })).status, 404);
  const m = await s.metrics();
  t.match(m, `# TYPE ${OPS} histogram`);
  t.match(m, `${OPS}_count{operation_type="/metadata/identity/oauth2/token",status_code="200",namespace="shop",resource="https://vault.azure.net"} 1\n`);
  t.match(m, `${OPS}_count{operation_type="/metadata/identity/oauth2/token",status_code="400",namespace="shop",resource="https://vault.azure.net"} 2\n`, 'the refusal and IMDS\'s 400');
  t.match(m, `${OPS}_count{operation_type="/metadata/instance",status_code="200",namespace="shop",resource=""} 1\n`, 'proxied routes know their pod too');
  t.match(m, `${OPS}_count{operation_type="other",status_code="404",namespace="",resource=""} 1\n`);
  for (const le of ['0.005', '0.5', '1', '100']) {
    t.match(m, `${OPS}_bucket{le="${le}",operation_type="/metadata/identity/oauth2/token",status_code="200",namespace="shop",resource="https://vault.azure.net"} `, `bucket ${le} (NMI's from 0.5 s, finer below)`);
  }
  t.match(m, '# TYPE aadpodidentity_imds_operations_duration_seconds histogram');
  t.match(m, 'aadpodidentity_imds_operations_duration_seconds_count{operation_type="adal_token_msi_userassignedid"} 1\n', 'the success is timed');
  t.match(m, '# TYPE aadpodidentity_imds_operations_errors_count counter');
  t.match(m, 'aadpodidentity_imds_operations_errors_count{operation_type="adal_token_msi_userassignedid"} 1\n', 'the 400 is an error');
  t.match(m, 'aadpodidentity_imds_operations_errors_count{operation_type="adal_token_msi"} 0\n');
  t.match(m, '# TYPE aadpodidentity_kubernetes_api_operations_errors_count counter');
});

t.test('an excepted pod without a client id is NMI\'s plain adal_token_msi', async (t) => {
  const s = await startStack(t, { flags: ['--token-cache=false'] });
  // Three identities on this VM and none named: IMDS itself answers 400, an error of that operation.
  t.equal((await s.ask(TOKEN, { from: '127.0.0.12', headers: META })).status, 400);
  t.match(await s.metrics(), 'aadpodidentity_imds_operations_errors_count{operation_type="adal_token_msi"} 1\n');
});

t.test('thousands of distinct resources, client ids and paths leave the series count bounded', async (t) => {
  const s = await startStack(t, { flags: ['--token-cache=false'] });
  // Warm every label set the hostile requests below can reach, then count.
  await s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  await s.ask(`${TOKEN}&client_id=${IDS.writer!.clientID}`, { from: '127.0.0.10', headers: META });
  await s.ask('/metadata/x', { from: '127.0.0.10', headers: META });
  const marker = 'zq';
  const requests: string[] = [];
  for (let i = 0; i < 1000; i++) {
    requests.push(`/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2F${marker}${i}.example`);
    requests.push(`${TOKEN}&client_id=${marker}-${i}-0000-4000-8000-000000000000`);
    requests.push(`/metadata/${marker}${i}/path?x=${marker}${i}`);
  }
  const before = series(await s.metrics()).length;
  const statuses = new Map<number, number>();
  for (let i = 0; i < requests.length; i += 50) {
    const batch = await Promise.all(requests.slice(i, i + 50).map((p) => s.ask(p, { from: '127.0.0.10', headers: META })));
    for (const a of batch) statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
  }
  t.equal([...statuses.values()].reduce((a, b) => a + b, 0), 3000, 'all answered');
  const text = await s.metrics();
  const after = series(text);
  t.notOk(text.includes(marker), 'no label value comes from what the pods sent');
  // The distinct resources are new label values only as "other": one more label set per status seen.
  t.ok(after.length - before <= 60, `series grew by ${after.length - before} for 3000 distinct requests`);
  // Whatever each answer was (grants, refusals, the per-caller share's 429s), every one is counted
  // once, under label values from the closed sets only.
  let counted = 0;
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${OPS}_count\\{operation_type="([^"]*)",status_code="(\\d+)",namespace="([^"]*)",resource="([^"]*)"\\} (\\d+)$`).exec(line);
    if (m === null) continue;
    t.ok(Object.values(OPERATION_PATHS).includes(m[1]!), `operation_type ${m[1]}`);
    t.ok(['shop', ''].includes(m[3]!), `namespace ${m[3]}`);
    t.ok([...KNOWN_RESOURCES, 'other', ''].includes(m[4]!), `resource ${m[4]}`);
    counted += Number(m[5]);
  }
  t.equal(counted, 3003, 'every request counted once');
  t.ok(statuses.get(200)! > 0 && statuses.get(403)! > 0 && statuses.get(404)! > 0, 'grants, refusals and unknown routes among them');
});

t.test('resource label: known audiences by their listed form, anything else "other"', async (t) => {
  t.equal(resourceLabel('https://vault.azure.net/'), 'https://vault.azure.net');
  t.equal(resourceLabel('HTTPS://MANAGEMENT.AZURE.COM'), 'https://management.azure.com/');
  t.equal(resourceLabel('https://management.azure.com/'), 'https://management.azure.com/');
  t.equal(resourceLabel('https://vault.azure.net.evil'), 'other');
  t.equal(resourceLabel(undefined), '');
  t.equal(new Set(KNOWN_RESOURCES.map(resourceLabel)).size, KNOWN_RESOURCES.length, 'each listed audience is its own value');
});

t.test('process_* and nodejs_* under their standard names', async (t) => {
  const m = new DaemonMetrics(new Registry());
  const text = await m.registry.metrics();
  for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_seconds']) {
    t.match(text, new RegExp(`^${name} `, 'm'), name);
  }
  t.notOk(text.includes('podid_nmi_process_'), 'no prefixed copy');
});
