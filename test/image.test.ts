// The image a cluster pulls, built from the Dockerfile as it is and run as daemonset.yaml runs
// it (test/image/as-daemonset.ts reads args, env, securityContext, mounts from the manifest):
// podman runs it in a network namespace the test made (the node, hostNetwork), in a pod cgroup
// of the test's own kubepods subtree, against the fake API server and IMDS emulator, which stay
// processes of the test. Scenarios: a pod's token through DNAT, a hostNetwork pod attributed by
// socket cgroup, /host/token from an allowed caller, fail-closed after SIGTERM, and
// `nmi cleanup-iptables` run from the image. Also: every program the daemon runs is in the image.
//
// In CI (CI=true) a machine without podman fails this test instead of skipping it.
import t from 'tap';
import type { Test } from 'tap';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { decodeFakeToken } from '../src/emulator/imds-emulator.ts';
import { netnsUnavailable, NsProcess } from './netns/netns.ts';
import { IDS, NODE_GATEWAY, NODE_NAME, PODS, RESOURCE } from './e2e/cluster.ts';
import { E2E } from './e2e/environment.ts';
import type { ImdsRequest } from './e2e/environment.ts';
import { pod } from './fake-apiserver/fixtures.ts';
import { cgroupsUnavailable, parseCurlOut, TestCgroups } from './helpers/cgroups.ts';
import { nmiContainer, podmanRunArgs, probePort } from './image/as-daemonset.ts';
import { buildImage, CONTAINERS_CONF, ensureBases, IMAGE, imageSize, podman, podmanUnavailable, removeContainers, removeLibpodParent, removeV1Cgroups, ROOT } from './image/podman.ts';

const TOKEN = `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${RESOURCE}`;
const CLEAN_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
const UID = {
  daemon: 'dddddddd-2222-4000-8000-00000000000d',
  a: 'aaaaaaaa-2222-4000-8000-00000000000a',
  b: 'bbbbbbbb-2222-4000-8000-00000000000b',
  csi: 'cccccccc-2222-4000-8000-00000000000c',
};
const fromCurl = (r: ImdsRequest): boolean => String(r.headers['user-agent'] ?? '').startsWith('curl/');

/**
 * Every program the daemon's source runs. Processes start in one place (run-command.ts, which
 * the first assertion keeps true); programs are named as the first argument of a runner call
 * (`run('ss', …)`, `output(run, 'iptables-nft-save', …)`), in the probe loop's list, or by
 * binariesFor's templates, expanded for both iptables flavours.
 */
function daemonPrograms(): { programs: string[]; spawners: string[] } {
  const programs = new Set<string>();
  const spawners: string[] = [];
  const src = join(ROOT, 'src');
  for (const file of readdirSync(src, { recursive: true, encoding: 'utf8' })) {
    if (!file.endsWith('.ts')) continue;
    const text = readFileSync(join(src, file), 'utf8');
    if (/from 'node:child_process'|require\(['"](node:)?child_process['"]\)/.test(text)) spawners.push(file);
    for (const m of text.matchAll(/\b(?:run|#run|runner)\(\s*'([a-z0-9][a-z0-9._-]*)'/g)) programs.add(m[1]!);
    for (const m of text.matchAll(/\boutput\(run,\s*'([a-z0-9][a-z0-9._-]*)'/g)) programs.add(m[1]!);
    for (const m of text.matchAll(/for \(const cmd of \[([^\]]*)\]\)/g)) for (const s of m[1]!.matchAll(/'([a-z0-9._-]+)'/g)) programs.add(s[1]!);
    for (const m of text.matchAll(/`([a-z0-9-]*)\$\{backend\}([a-z0-9-]*)`/g)) for (const b of ['nft', 'legacy']) programs.add(`${m[1]}${b}${m[2]}`);
  }
  return { programs: [...programs].sort(), spawners };
}

const unavailable = (await podmanUnavailable()) ?? (await netnsUnavailable()) ?? cgroupsUnavailable();
t.setTimeout(2_400_000); // a cold build (stand-in bases, npm ci, apt-get) takes minutes on a loaded machine

if (unavailable !== null && process.env.CI === 'true') {
  t.fail(`the image test cannot run in CI: ${unavailable}`);
}

t.test('the image, built from the Dockerfile and run as daemonset.yaml runs it', { skip: unavailable ?? false }, async (t) => {
  t.teardown(removeLibpodParent);
  await t.test('the Dockerfile builds', async (t) => {
    const base = await ensureBases((l) => t.comment(l));
    t.comment(`${base.what}: ${(base.ms / 1000).toFixed(1)} s${base.cached ? ' (from podman storage)' : ' (built)'}`);
    const built = await buildImage((l) => t.comment(l));
    const size = await imageSize();
    t.comment(`${IMAGE}: built in ${(built.ms / 1000).toFixed(1)} s${built.cached ? ' (every step cached)' : ''}, ${(size / 1e6).toFixed(1)} MB`);
    t.match(built.output, /COMMIT localhost\/podid-nmi:test/, 'podman committed the image');
    t.ok(size > 0);
  });

  await t.test('the image holds every program the daemon runs, and not npm, corepack or yarn', async (t) => {
    const { programs, spawners } = daemonPrograms();
    t.same(spawners, ['iptables/run-command.ts'], 'only the command runner starts processes, so the list below is complete');
    for (const known of ['ss', 'conntrack', 'sysctl', 'iptables-nft', 'iptables-legacy-restore', 'ip6tables-legacy-save']) {
      t.ok(programs.includes(known), `the source scan finds ${known}`);
    }
    t.comment(`programs the daemon runs: ${programs.join(' ')}`);
    const script = 'for p in "$@"; do command -v "$p" >/dev/null 2>&1 && echo "have $p" || echo "missing $p"; done';
    const r = await podman(['run', '--rm', '--network', 'none', '--entrypoint', 'sh', IMAGE, '-c', script, 'sh',
      ...programs, 'npm', 'npx', 'corepack', 'yarn', 'node', 'nmi']);
    const missing = r.stdout.split('\n').filter((l) => l.startsWith('missing ')).map((l) => l.slice(8));
    t.same(missing.filter((p) => programs.includes(p) || p === 'node' || p === 'nmi'), [], 'every program is on the image\'s PATH');
    t.same(missing.filter((p) => !programs.includes(p)).sort(), ['corepack', 'npm', 'npx', 'yarn'], 'the base image\'s package managers are not shipped');
    const leftovers = await podman(['run', '--rm', '--network', 'none', '--entrypoint', 'sh', IMAGE, '-c',
      'find /app/node_modules -type f \\( -name "*.d.ts" -o -name "*.map" -o -name "*.md" \\) | head -5']);
    t.equal(leftovers.stdout.trim(), '', 'no types, source maps or markdown in node_modules');
    // What the trimming must not have broken: each dependency still loads (pino-pretty, say,
    // which only --log-format=text reaches and no scenario below runs).
    const deps = Object.keys((JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> }).dependencies);
    const load = await podman(['run', '--rm', '--network', 'none', '--entrypoint', 'node', IMAGE, '--input-type=module', '-e',
      `for (const d of ${JSON.stringify(deps)}) { await import(d); console.log('loaded ' + d); }`], { allowFail: true });
    t.equal(load.code, 0, load.stderr.trim().slice(-1000));
    t.same(load.stdout.trim().split('\n'), deps.map((d) => `loaded ${d}`), `every dependency loads in the image: ${deps.join(', ')}`);
  });

  await t.test('scenarios against the running image', async (t) => {
    const name = `podid-nmi-test-${randomBytes(4).toString('hex')}`;
    const scratch = mkdtempSync(join(tmpdir(), 'podid-image-run-'));
    let cg: TestCgroups | undefined;
    let env: E2E | undefined;
    const cleanup = async (): Promise<void> => {
      await removeContainers([name]);
      await env?.destroy();
      await cg?.destroy();
      if (cg !== undefined) removeV1Cgroups(cg.parent);
      rmSync(scratch, { recursive: true, force: true });
    };
    t.teardown(cleanup);
    // A test process killed by tap's timeout never reaches its teardown: the container goes at exit.
    const sweep = (): void => { try { execFileSync('podman', ['rm', '-f', '--time', '0', name], { stdio: 'ignore', env: { ...process.env, CONTAINERS_CONF } }); } catch { /* gone */ } };
    process.once('exit', sweep);
    t.teardown(() => { process.off('exit', sweep); });

    cg = new TestCgroups(t);
    env = await E2E.start();
    const e2e = env;
    const nsenter = ['nsenter', `--net=/var/run/netns/${e2e.node.ns}`];
    // cgroupfs layout: podman's cgroupfs manager refuses a .slice parent.
    const daemonPod = cg.podContainer('cgroupfs', 'burstable', UID.daemon, 'nmi').replace(/\/[^/]+$/, '');
    const cgs = {
      a: cg.podContainer('systemd', 'besteffort', UID.a),
      b: cg.podContainer('cgroupfs', 'burstable', UID.b),
      csi: cg.podContainer('systemd', 'guaranteed', UID.csi),
      node: cg.plain('system.slice'),
    };
    // Pod-network pods A and B, for socket attestation: their kubelet pod cgroups, named for their UIDs.
    const podCgs = { a: cg.podContainer('systemd', 'besteffort', PODS.a.uid), b: cg.podContainer('cgroupfs', 'besteffort', PODS.b.uid) };
    const hostPod = (podName: string, namespace: string, uid: string, labels: Record<string, string>) => e2e.api.request({
      op: 'create', resource: 'pods', object: pod({ name: podName, namespace, uid, labels, node: NODE_NAME, ip: NODE_GATEWAY, hostNetwork: true, phase: 'Running' }),
    });
    await hostPod('podid-nmi-img', 'kube-system', UID.daemon, { 'app.kubernetes.io/name': 'podid-nmi' });
    await hostPod('host-a', 'team-a', UID.a, { aadpodidbinding: 'a' });
    await hostPod('host-b', 'team-b', UID.b, { aadpodidbinding: 'b' });
    await hostPod('csi-provider', 'kube-system', UID.csi, { app: 'csi-secrets-store-provider-azure' });
    // The startup taint the manifest's --remove-node-taint names, if it names one.
    const taint = /^--remove-node-taint=(.+)$/.exec(nmiContainer().args?.find((a) => a.startsWith('--remove-node-taint=')) ?? '')?.[1];
    await e2e.api.request({ op: 'create', resource: 'nodes', object: { metadata: { name: NODE_NAME }, spec: { taints: taint === undefined ? [] : [{ key: taint, effect: 'NoSchedule' }] } } });

    const KUBECONFIG_IN = '/var/run/podid-image-test/kubeconfig';
    // Only what a test cannot share with a node: the cluster's address (no service account
    // token here), and the test's private kubepods subtree (on a hybrid host, the node's cgroup2
    // tree sits at /sys/fs/cgroup/unified, where a v2 node's runtime would mount it at /sys/fs/cgroup).
    const overrides: Record<string, string> = { kubeconfig: KUBECONFIG_IN, 'kubepods-cgroup-parent': cg.parent };
    const mounts = [{ host: e2e.kubeconfig, path: KUBECONFIG_IN, readOnly: true }];
    if (cg.root !== '/sys/fs/cgroup') {
      overrides['cgroup-root'] = cg.root;
      mounts.push({ host: cg.root, path: cg.root, readOnly: false });
    }
    const notes: string[] = [];
    const runArgs = podmanRunArgs({
      name, netns: e2e.node.ns, scratch, overrides, mounts, cgroupParent: `/${daemonPod}`, notes,
      fields: { 'spec.nodeName': NODE_NAME, 'status.hostIP': NODE_GATEWAY, 'status.podIP': NODE_GATEWAY, 'metadata.name': 'podid-nmi-img', 'metadata.namespace': 'kube-system' },
    }, IMAGE);
    const containerArgs = runArgs.slice(runArgs.indexOf(IMAGE) + 1);
    t.comment(`podman ${runArgs.join(' ')}`);
    for (const note of notes) t.comment(note);
    e2e.launchDaemon = () => new NsProcess(spawn('podman', runArgs, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, CONTAINERS_CONF } }));

    const curl = async (cgroup: string, path: string, headers: Record<string, string> = { Metadata: 'true' }, host = '169.254.169.254') => {
      const args = ['-s', '--noproxy', '*', '--max-time', '5', '-w', '\n@@%{http_code}\n@@reason=%header{x-podid-nmi-reason}'];
      for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
      args.push(`http://${host}${path}`);
      const r = await cg!.run(cgroup, 'curl', args, { prefix: [...nsenter, 'env', '-i', CLEAN_PATH] });
      const at = r.stdout.lastIndexOf('\n@@reason=');
      return { exit: r.code, reason: at === -1 ? '' : r.stdout.slice(at + 10).trim(), ...parseCurlOut(at === -1 ? r.stdout : r.stdout.slice(0, at)) };
    };
    const tokenOf = (a: { json: Record<string, unknown> | undefined }) =>
      typeof a.json?.access_token === 'string' ? decodeFakeToken(a.json.access_token)?.client_id : undefined;
    const refused = (t: Test, a: Awaited<ReturnType<typeof curl>>, status: number, reason: string) => {
      t.equal(a.status, status, `${status} ${a.body.slice(0, 160)}`);
      t.equal(a.json?.reason, reason);
      t.equal(a.json?.access_token, undefined, 'no token');
    };

    await t.test('starts from the image with the manifest\'s args, read-only, as root, in its pod cgroup; ready', async (t) => {
      const run = await e2e.startDaemon(300_000, { argv: containerArgs });
      const inspect = JSON.parse((await podman(['inspect', name])).stdout) as Array<{ HostConfig: { ReadonlyRootfs: boolean; Privileged: boolean }; Config: { User: string } }>;
      t.equal(inspect[0]?.HostConfig.ReadonlyRootfs, true, 'read-only root filesystem');
      const write = await podman(['exec', name, 'sh', '-c', 'touch /app/x'], { allowFail: true });
      t.not(write.code, 0, `writing to the root filesystem fails: ${write.stderr.trim()}`);
      t.equal((await podman(['exec', name, 'id', '-u'])).stdout.trim(), '0', 'uid 0');
      // hostPID: the container's PID 1 is the node's; the daemon is the container's main process.
      const pid = (await podman(['inspect', '--format', '{{.State.Pid}}', name])).stdout.trim();
      const self = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      t.match(self, new RegExp(`^0::/${daemonPod}/`, 'm'), 'the daemon runs in a container cgroup of its pod');
      const readiness = nmiContainer().readinessProbe;
      if (readiness?.httpGet !== undefined) {
        const r = await e2e.node.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://127.0.0.1:${probePort(readiness.httpGet.port)}${readiness.httpGet.path ?? '/'}`], { allowFail: true });
        t.equal(r.stdout, '200', 'the manifest\'s readiness probe passes');
      } else if (readiness?.exec !== undefined) {
        const r = await podman(['exec', name, ...readiness.exec.command], { allowFail: true });
        t.equal(r.code, 0, `the manifest's readiness probe passes: ${r.stderr.trim()}`);
      }
      t.match(run.proc.stdout, /"msg":"iptables backend detected"/);
      t.match((await e2e.iptables('-S', 'aad-metadata')).stdout, /DNAT --to-destination 127\.0\.0\.1:2579/, 'the pod chain');
      t.match((await e2e.iptables('-S', 'aad-metadata-host')).stdout, new RegExp(`-m cgroup --path "${daemonPod}" -j RETURN`), 'the host chain skips its own pod');
      if (taint !== undefined) {
        await e2e.waitDaemonLog(run, (l) => l.msg === 'startup taint removed: the node is intercepted and takes pods', 'taint removal', 30_000);
        const node = (await e2e.api.request({ op: 'get', resource: 'nodes', namespace: 'default', name: NODE_NAME })).object as { spec: { taints?: unknown[] } };
        t.same(node.spec.taints ?? [], [], 'the startup taint is lifted');
      }
    });

    await t.test('a pod\'s token through DNAT', async (t) => {
      // The DaemonSet attests pod sockets: a pod's processes live in its kubelet pod cgroup and
      // its own network namespace, and the daemon (hostPID) finds the socket there.
      const podCurl = (key: 'a' | 'b', path: string) => cg!.run(podCgs[key], 'curl', ['-s', '--noproxy', '*', '--max-time', '5',
        '-H', 'Metadata: true', '-w', '\n@@%{http_code}', `http://169.254.169.254${path}`],
      { prefix: ['nsenter', `--net=/var/run/netns/${e2e.pods[key].ns}`, 'env', '-i', CLEAN_PATH] }).then((r) => ({ exit: r.code, ...parseCurlOut(r.stdout) }));
      const a = await podCurl('a', TOKEN);
      t.equal(a.status, 200, a.body.slice(0, 200));
      t.equal(tokenOf(a), IDS.A.clientID, 'pod A: token A');
      t.equal(tokenOf(await podCurl('b', TOKEN)), IDS.B.clientID, 'pod B: token B');
      const other = await podCurl('a', `${TOKEN}&client_id=${IDS.B.clientID}`);
      t.equal(other.status, 403, 'pod A asking for B');
      t.equal(other.json?.access_token, undefined);
      t.same((await e2e.imdsRequests()).filter(fromCurl).map((r) => r.url), [], 'no pod request reached IMDS directly');
    });

    await t.test('a hostNetwork pod is attributed by its socket\'s cgroup (ss in the image)', async (t) => {
      const a = await curl(cgs.a, TOKEN);
      t.equal(a.status, 200, a.body.slice(0, 200));
      t.equal(tokenOf(a), IDS.A.clientID, 'systemd-layout hostNetwork pod A: token A');
      t.equal(tokenOf(await curl(cgs.b, TOKEN)), IDS.B.clientID, 'cgroupfs-layout hostNetwork pod B: token B');
      refused(t, await curl(cgs.a, `${TOKEN}&client_id=${IDS.B.clientID}`), 403, 'identity_not_bound');
    });

    await t.test('/host/token from the allowed caller; others 403', async (t) => {
      const ok = await curl(cgs.csi, `/host/token/?resource=${RESOURCE}`, { podns: 'team-a', podname: 'pod-a' }, '127.0.0.1:2579');
      t.equal(ok.status, 200, ok.body.slice(0, 200));
      t.equal(ok.json?.clientid, IDS.A.clientID);
      refused(t, await curl(cgs.a, `/host/token/?resource=${RESOURCE}`, { podns: 'team-b', podname: 'pod-b' }, '127.0.0.1:2579'), 403, 'host_token_forbidden');
    });

    await t.test('SIGTERM: the container exits 0, the rules stay, pods are refused, IMDS sees nothing', async (t) => {
      const run = e2e.daemons.at(-1)!;
      await podman(['kill', '--signal', 'TERM', name]);
      const code = await Promise.race([run.proc.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000))]);
      t.equal(code, 0, 'podman run exits with the daemon\'s status 0');
      const before = (await e2e.imdsRequests()).length;
      const podA = await e2e.curl('a', TOKEN);
      t.equal(podA.exit, 7, 'pod A: connection refused');
      t.equal((await curl(cgs.a, TOKEN)).exit, 7, 'hostNetwork pod A: connection refused');
      t.match((await e2e.iptables('-S', 'aad-metadata')).stdout, /DNAT/, 'pod chain still there');
      t.match((await e2e.iptables('-S', 'aad-metadata-host')).stdout, /DNAT/, 'host chain still there');
      t.equal((await e2e.imdsRequests()).length, before, 'IMDS saw nothing');
      t.equal((await podman(['container', 'exists', name], { allowFail: true })).code, 1, 'the container is gone (--rm)');
    });

    await t.test('`nmi cleanup-iptables` from the image removes both chains', async (t) => {
      const cleanupName = `${name}-cleanup`;
      const args = podmanRunArgs({ name: cleanupName, netns: e2e.node.ns, scratch, overrides: {}, mounts: [], fields: { 'spec.nodeName': NODE_NAME, 'status.hostIP': NODE_GATEWAY } }, IMAGE);
      const r = await podman([...args.slice(0, args.indexOf(IMAGE) + 1), 'cleanup-iptables'], { allowFail: true, timeoutMs: 120_000 })
        .finally(() => removeContainers([cleanupName]));
      t.equal(r.code, 0, r.stderr.trim() || r.stdout.trim());
      t.not((await e2e.iptables('-S', 'aad-metadata')).code, 0, 'pod chain gone');
      t.not((await e2e.iptables('-S', 'aad-metadata-host')).code, 0, 'host chain gone');
      t.notMatch((await e2e.iptables('-S', 'PREROUTING')).stdout, /aad-metadata/, 'no jump left');
    });
  });
});
