import t from 'tap';
import { startImdsEmulator } from '../src/emulator/imds-emulator.ts';
import { ImdsClient, UpstreamFailure } from '../src/upstream/imds-client.ts';

const ID = { clientID: 'c-1', resourceID: '/r/1', objectID: 'o-1' };
const PATH = '/metadata/identity/oauth2/token?api-version=2018-02-01&resource=r&client_id=c-1';

t.test('past maxPending, requests are refused as busy at once and the bound recovers', async (t) => {
  const emulator = await startImdsEmulator({ identities: [ID], rateLimit: false, tokenLatencyMs: 200 });
  t.teardown(() => emulator.close());
  const client = new ImdsClient({ host: '127.0.0.1', port: emulator.port, maxPending: 2 });
  t.teardown(() => client.close());
  const first = [client.fetch('GET', PATH), client.fetch('GET', PATH)];
  t.equal(client.pending, 2);
  const third = await client.fetch('GET', PATH).catch((e: unknown) => e);
  t.ok(third instanceof UpstreamFailure && third.kind === 'busy', 'third is busy');
  t.same((await Promise.all(first)).map((a) => a.status), [200, 200]);
  t.equal(client.pending, 0);
  t.equal((await client.fetch('GET', PATH)).status, 200, 'accepts again once drained');
  t.equal(emulator.requests.length, 3, 'the busy one never reached IMDS');
});

t.test('failures are classified: refused, timeout, aborted, oversized', async (t) => {
  const emulator = await startImdsEmulator({ identities: [ID], rateLimit: false });
  t.teardown(() => emulator.close());
  const client = new ImdsClient({ host: '127.0.0.1', port: emulator.port, responseTimeoutMs: 100, maxResponseBytes: 1024 });
  t.teardown(() => client.close());
  const kind = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof UpstreamFailure ? e.kind : String(e)));
  // The margin is wide on purpose: the suite runs beside namespace tests on two cores.
  emulator.setFault({ kind: 'slow', delayMs: 5_000 }, { times: 1 });
  t.equal(await kind(client.fetch('GET', PATH)), 'timeout');
  emulator.setFault({ kind: 'status', status: 200, body: 'x'.repeat(4096) }, { times: 1 });
  t.equal(await kind(client.fetch('GET', PATH)), 'invalid');
  emulator.setFault({ kind: 'slow', delayMs: 1_000 }, { times: 1 });
  t.equal(await kind(client.fetch('GET', PATH, AbortSignal.timeout(30))), 'aborted');
  const closed = new ImdsClient({ host: '127.0.0.1', port: 1 });
  t.teardown(() => closed.close());
  t.equal(await kind(closed.fetch('GET', PATH)), 'unreachable');
});
