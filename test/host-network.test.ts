// Socket-cgroup attribution and /host/token over HTTP, with real cgroups: curl runs as a
// process placed in kubelet-style pod cgroups (systemd and cgroupfs layouts, every QoS class)
// and calls the daemon on loopback. The daemon (in this process) reads each socket's cgroup
// with ss. Nothing leaves loopback.
import t, { type Test } from 'tap';
import { cgroupsUnavailable, parseCurlOut, TestCgroups } from './helpers/cgroups.ts';
import { IDS, STATE_YAML, startStack, TOKEN, type Stack } from './helpers/stack.ts';
import { META } from './helpers/http.ts';


const UID = {
  hostOrders: 'aaaaaaaa-0000-4000-8000-000000000001',
  hostBilling: 'aaaaaaaa-0000-4000-8000-000000000002',
  hostPlain: 'aaaaaaaa-0000-4000-8000-000000000003',
  csi: 'aaaaaaaa-0000-4000-8000-000000000004',
  otherNode: 'aaaaaaaa-0000-4000-8000-000000000005',
  noPod: 'aaaaaaaa-0000-4000-8000-000000000006',
  done: 'aaaaaaaa-0000-4000-8000-000000000007',
};

function hostPod(name: string, namespace: string, uid: string, labels: Record<string, string>, node = 'node-1', phase = 'Running'): string {
  return `---
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: ${namespace}, uid: ${uid}, labels: ${JSON.stringify(labels)}}
spec: {nodeName: ${node}, hostNetwork: true}
status: {phase: ${phase}, podIPs: [{ip: 10.0.0.4}]}
`;
}

const HOST_STATE = STATE_YAML
  + hostPod('host-orders', 'shop', UID.hostOrders, { aadpodidbinding: 'orders' })
  + hostPod('host-billing', 'shop', UID.hostBilling, { aadpodidbinding: 'billing' })
  + hostPod('host-plain', 'shop', UID.hostPlain, {})
  + hostPod('csi-provider', 'kube-system', UID.csi, { app: 'csi-secrets-store-provider-azure' })
  + hostPod('far', 'shop', UID.otherNode, { aadpodidbinding: 'orders' }, 'node-2')
  + hostPod('finished', 'shop', UID.done, { aadpodidbinding: 'orders' }, 'node-1', 'Succeeded');

async function suite(): Promise<void> {
  const cg = new TestCgroups(t);
  const s = await startStack(t, { stateYaml: HOST_STATE, flags: ['--intercept-host-network', `--kubepods-cgroup-parent=${cg.parent}`] });
  const cgs = {
    hostOrders: cg.podContainer('systemd', 'burstable', UID.hostOrders),
    hostBilling: cg.podContainer('cgroupfs', 'besteffort', UID.hostBilling),
    hostPlain: cg.podContainer('systemd', 'guaranteed', UID.hostPlain),
    csi: cg.podContainer('cgroupfs', 'guaranteed', UID.csi),
    otherNode: cg.podContainer('systemd', 'besteffort', UID.otherNode),
    noPod: cg.podContainer('cgroupfs', 'burstable', UID.noPod),
    done: cg.podContainer('systemd', 'burstable', UID.done),
    node: cg.plain('system.slice'),
  };
  const curl = async (path: string, from: string, headers: Record<string, string> = META, iface?: string) => {
    const args = ['-s', '--max-time', '8', '-w', '\n@@%{http_code}\n@@reason=%header{x-podid-nmi-reason}'];
    for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
    if (iface !== undefined) args.push('--interface', iface);
    args.push(`http://127.0.0.1:${s.port}${path}`);
    const r = await cg.run(from, 'curl', args, { prefix: ['env', '-i', 'PATH=/usr/bin:/bin'] });
    const at = r.stdout.lastIndexOf('\n@@reason=');
    const reason = at === -1 ? undefined : r.stdout.slice(at + '\n@@reason='.length).trim() || undefined;
    return { ...parseCurlOut(at === -1 ? r.stdout : r.stdout.slice(0, at)), reason };
  };
  const refusedWith = (t2: Test, a: Awaited<ReturnType<typeof curl>>, status: number, reason: string) => {
    t2.equal(a.status, status, `status ${status}`);
    t2.equal(a.json?.reason, reason, 'reason in the body');
    t2.equal(a.reason, reason, 'reason in the header');
    t2.type(a.json?.error_description, 'string');
  };

  t.test('hostNetwork pods are attributed by their socket cgroup, whatever the layout and QoS', async (t) => {
    const orders = await curl(TOKEN, cgs.hostOrders);
    t.equal(orders.status, 200);
    t.equal(orders.json?.client_id, IDS.reader!.clientID, 'systemd/burstable pod gets its own identity');
    const billing = await curl(TOKEN, cgs.hostBilling);
    t.equal(billing.status, 200);
    t.equal(billing.json?.client_id, IDS.writer!.clientID, 'cgroupfs/besteffort pod gets its own identity');
    const other = await curl(`${TOKEN}&client_id=${IDS.writer!.clientID}`, cgs.hostOrders);
    refusedWith(t, other, 403, 'identity_not_bound');
    refusedWith(t, await curl(TOKEN, cgs.hostPlain), 400, 'pod_unlabeled');
    const log = s.logs.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.pod === 'shop/host-billing');
    t.equal(log?.via, 'socket_cgroup', 'the log says how the pod was found');
  });

  t.test('no pod cgroup, no pod, or a pod not of this node: refused, never guessed', async (t) => {
    refusedWith(t, await curl(TOKEN, cgs.node), 403, 'caller_not_in_pod');
    refusedWith(t, await curl(TOKEN, cgs.noPod), 503, 'caller_pod_unknown');
    refusedWith(t, await curl(TOKEN, cgs.otherNode), 503, 'caller_pod_unknown');
    refusedWith(t, await curl(TOKEN, cgs.done), 503, 'caller_pod_unknown');
    // A pod's own address still finds it by IP, from any cgroup: the source-IP strategy comes first.
    const byIp = await curl(TOKEN, cgs.node, META, '127.0.0.10');
    t.equal(byIp.json?.client_id, IDS.reader!.clientID);
  });

  t.test('/host/token from the allowed CSI provider answers for the named pod, in NMI\'s shape', async (t) => {
    const a = await curl('/host/token/?resource=https://vault.azure.net', cgs.csi, { podns: 'shop', podname: 'orders' });
    t.equal(a.status, 200);
    t.same(Object.keys(a.json ?? {}), ['token', 'clientid']);
    t.equal(a.json?.clientid, IDS.reader!.clientID);
    const token = a.json?.token as Record<string, unknown>;
    t.same(Object.keys(token), ['access_token', 'refresh_token', 'expires_in', 'expires_on', 'not_before', 'resource', 'token_type']);
    t.equal(token.resource, 'https://vault.azure.net');
    t.equal(token.token_type, 'Bearer');
    t.match(token.expires_on, /^\d+$/);
    const byClient = await curl(`/host/token?resource=https%3A%2F%2Fvault.azure.net&client_id=${IDS.writer!.clientID}`, cgs.csi, { podns: 'shop', podname: 'billing' });
    t.equal(byClient.json?.clientid, IDS.writer!.clientID, 'client_id and the path without a slash work too');
  });

  t.test('/host/token decides for the named pod exactly as its own request', async (t) => {
    const csi = (q: string, pod: string, ns = 'shop') => curl(`/host/token/?resource=https://vault.azure.net${q}`, cgs.csi, { podns: ns, podname: pod });
    refusedWith(t, await csi('', 'web'), 400, 'pod_unlabeled');
    refusedWith(t, await csi(`&client_id=${IDS.writer!.clientID}`, 'orders'), 403, 'identity_not_bound');
    refusedWith(t, await csi('', 'elsewhere'), 404, 'host_token_pod_unknown');
    refusedWith(t, await csi('', 'nobody'), 404, 'host_token_pod_unknown');
    refusedWith(t, await curl('/host/token/?resource=R', cgs.csi, { podns: 'shop' }), 400, 'host_token_pod_missing');
    refusedWith(t, await curl('/host/token/?resource=R', cgs.csi, { podns: 'shop', podname: '../x' }), 400, 'host_token_pod_missing');
    refusedWith(t, await curl('/host/token/', cgs.csi, { podns: 'shop', podname: 'orders' }), 400, 'resource_missing');
  });

  t.test('/host/token from anyone else: 403', async (t) => {
    const named = { podns: 'shop', podname: 'orders' };
    refusedWith(t, await curl('/host/token/?resource=R', cgs.hostOrders, named), 403, 'host_token_forbidden');
    refusedWith(t, await curl('/host/token/?resource=R', cgs.node, named), 403, 'host_token_forbidden');
    refusedWith(t, await curl('/host/token/?resource=R', cgs.node, named, '127.0.0.10'), 403, 'host_token_forbidden');
    const metrics = await s.metrics();
    t.match(metrics, /podid_nmi_requests_total\{route="host_token",decision="refused",status="403",reason="host_token_forbidden"\} 3/);
  });
}

const why = cgroupsUnavailable();
if (why !== null) {
  t.plan(0, why);
} else {
  await suite();
}

// The refusals a file-backed daemon cannot reach on its own: its own pod calling itself, and
// a socket whose cgroup cannot be read. A handler with its caller room set up for them.
t.test('caller_is_self and caller_unattributable over HTTP; the lookup queue is bounded', { skip: why ?? false }, async (t) => {
  const { FileClusterState } = await import('../src/cluster/file-source.ts');
  const { MetadataHandler } = await import('../src/listener/metadata-handler.ts');
  const { listen } = await import('../src/listener/listener.ts');
  const { CallerRoom } = await import('../src/pods/caller-room.ts');
  const { SocketCgroupReader } = await import('../src/pods/socket-cgroup.ts');
  const { ImdsClient } = await import('../src/upstream/imds-client.ts');
  const { UpstreamScheduler } = await import('../src/upstream/scheduler.ts');
  const { RequestAdmission } = await import('../src/listener/admission.ts');
  const { MANAGED } = await import('../src/decision/decide.ts');
  const cg = new TestCgroups(t);
  const dir = t.testdir({ 'state.yaml': HOST_STATE });
  const state = await FileClusterState.load(`${dir}/state.yaml`, 'node-1');
  const imds = new ImdsClient({ host: '127.0.0.1', port: 9, connectTimeoutMs: 100, responseTimeoutMs: 100 });
  t.teardown(() => imds.close());
  const serve = async (sockets: InstanceType<typeof SocketCgroupReader>, selfUid: string | undefined) => {
    const callers = new CallerRoom({ state, nodeName: 'node-1', sockets, cgroupParent: cg.parent, selfUid, podWaitMs: 100 });
    const handler = new MetadataHandler({
      state, imds, tokens: undefined, callers, podWaitMs: 100,
      scheduler: new UpstreamScheduler({ transport: imds }), tokenWaitMs: 1_000, stopping: new AbortController().signal,
      observer: { finished: () => {} }, admission: new RequestAdmission(state, { perCaller: 16, strangers: 4 }),
      blockInstanceMetadata: false, metadataHeaderRequired: true, interceptHostNetwork: true, hostTokenCallers: [],
      policy: MANAGED, assignmentWaitMs: 0,
    });
    const l = await listen({ host: '127.0.0.1', port: 0, maxConnections: 16 }, handler.handle);
    t.teardown(() => l.close(0));
    return l.address.port;
  };
  const ask = async (port: number, from: string) => {
    const r = await cg.run(from, 'curl', ['-s', '--max-time', '8', '-H', 'Metadata: true', '-w', '\n@@%{http_code}', `http://127.0.0.1:${port}${TOKEN}`], { prefix: ['env', '-i', 'PATH=/usr/bin:/bin'] });
    return parseCurlOut(r.stdout);
  };
  const orders = cg.podContainer('systemd', 'burstable', UID.hostOrders);

  const self = await ask(await serve(new SocketCgroupReader(), UID.hostOrders), orders);
  t.equal(self.status, 503);
  t.equal(self.json?.reason, 'caller_is_self', 'the daemon\'s own pod is never a caller (a rule loop while rules are rewritten)');

  const broken = await ask(await serve(new SocketCgroupReader({ commandPrefix: ['false'] }), undefined), orders);
  t.equal(broken.status, 503);
  t.equal(broken.json?.reason, 'caller_unattributable', 'ss failing is a retryable refusal, never a guess');

  // One ss at a time; lookups that arrive meanwhile share the next run; a full waiting room is busy.
  const runs = `${t.testdirName}/runs`;
  const slow = new SocketCgroupReader({ commandPrefix: ['sh', '-c', `echo run >> ${runs}; sleep 0.3; exec "$@"`, 'sh'], maxQueued: 3 });
  const results = await Promise.all([1, 2, 3, 4, 5].map((port) => slow.lookup('127.0.0.1', port)));
  t.same(results.map((r) => (r.kind === 'unavailable' ? r.why : r.kind)), ['missing', 'missing', 'missing', 'missing', 'busy']);
  const { readFileSync } = await import('node:fs');
  t.equal(readFileSync(runs, 'utf8').trim().split('\n').length, 2, 'five lookups, two ss runs: the first alone, the next three together');
  t.equal(slow.pending, 0, 'nothing left waiting');
});
