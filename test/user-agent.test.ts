// --custom-user-agent as NMI had it (version/version.go appends it to its own User-Agent):
// what the IMDS emulator and the fake API server actually receive.
import t from 'tap';
import { VERSION } from '../src/config/version.ts';
import { eventually } from './helpers/eventually.ts';
import { META } from './helpers/http.ts';
import { IDS, seededApi, startStack, TOKEN } from './helpers/stack.ts';

for (const [what, flags, expected] of [
  ['without --custom-user-agent', [], `podid-nmi/${VERSION}`],
  ['with --custom-user-agent', ['--custom-user-agent=contoso-ops/1.0 (aks)'], `podid-nmi/${VERSION} contoso-ops/1.0 (aks)`],
] as const) {
  t.test(`User-Agent ${what}: IMDS and the Kubernetes API see ${expected}`, async (t) => {
    const api = await seededApi(t);
    const s = await startStack(t, { kubeconfig: api.kubeconfig(), flags: [...flags] });
    await eventually(() => s.daemon.state.isReady(), 'the informers to sync');
    const a = await s.ask(TOKEN, { from: '127.0.0.10', headers: { ...META, 'user-agent': 'pod-sdk/9' } });
    t.equal(a.status, 200);
    t.equal(a.json?.client_id, IDS.reader!.clientID);

    const imds = s.emulator.requests;
    t.equal(imds.length, 1, 'one upstream request');
    t.equal(imds[0]!.headers['user-agent'], expected, 'IMDS sees the daemon\'s User-Agent, never the pod\'s');

    const kube = api.requests.filter((r) => r.resource !== undefined);
    t.ok(kube.some((r) => r.watch) && kube.some((r) => !r.watch), 'lists and watches were made');
    t.same([...new Set(kube.map((r) => r.userAgent))], [expected], 'every list and watch carries it');
  });
}
