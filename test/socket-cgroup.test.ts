// The pure parts of socket-cgroup attribution and hostNetwork interception: kubelet cgroup
// names, ss output, the /host/token caller list, the by-UID directory, and the OUTPUT chain.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { ClusterIndex } from '../src/cluster/cluster-index.ts';
import { hostRuleInput, ownCgroupFrom } from '../src/iptables/host-cgroups.ts';
import { desiredHostRules, HOST_CHAIN } from '../src/iptables/host-rules.ts';
import { planChain } from '../src/iptables/rules.ts';
import { podCgroupOf } from '../src/pods/kubelet-cgroup.ts';
import { isAllowedCaller, parseHostTokenCallers } from '../src/pods/host-token-callers.ts';
import { endpointKey, parseSsCgroups } from '../src/pods/socket-cgroup.ts';
import { pod } from './helpers/objects.ts';

const U = '8a6bd2c5-49f3-4c3e-9f0e-2b1c3d4e5f60';
const S = U.replaceAll('-', '_');

t.test('kubelet cgroup names to pod UIDs: both drivers, every QoS class', async (t) => {
  const cases: Array<[string, string, string]> = [
    [`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${S}.slice/cri-containerd-abc.scope`, 'systemd', `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${S}.slice`],
    [`/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${S}.slice/crio-abc.scope`, 'systemd', `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${S}.slice`],
    [`/kubepods.slice/kubepods-pod${S}.slice/docker-abc.scope`, 'systemd', `kubepods.slice/kubepods-pod${S}.slice`],
    [`/kubepods.slice/kubepods-pod${S}.slice`, 'systemd', `kubepods.slice/kubepods-pod${S}.slice`],
    [`/kubepods/burstable/pod${U}/0123abcd`, 'cgroupfs', `kubepods/burstable/pod${U}`],
    [`/kubepods/besteffort/pod${U}/0123abcd`, 'cgroupfs', `kubepods/besteffort/pod${U}`],
    [`/kubepods/pod${U}/0123abcd`, 'cgroupfs', `kubepods/pod${U}`],
  ];
  for (const [path, driver, podPath] of cases) t.same(podCgroupOf(path), { uid: U, driver, podPath }, path);
  t.same(podCgroupOf(`/podid-test-1/kubepods/pod${U}/c`, 'podid-test-1'), { uid: U, driver: 'cgroupfs', podPath: `podid-test-1/kubepods/pod${U}` }, 'under a parent');
});

t.test('anything else names no pod', async (t) => {
  const other = 'ffffffff-0000-4000-8000-000000000000';
  const none = [
    '/', '/system.slice/kubelet.service', '/user.slice/user-0.slice/session-1.scope',
    '/kubepods.slice', '/kubepods.slice/kubepods-burstable.slice', '/kubepods/burstable', '/kubepods',
    `/kubepods.slice/kubepods-guaranteed.slice/kubepods-guaranteed-pod${S}.slice`, // no such QoS slice
    `/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod${S}.slice`, // QoS mismatch
    `/kubepods.slice/kubepods-pod${U}.slice`, // dashes where systemd has underscores
    '/kubepods/pod-not-a-uid/c', `/kubepods/POD${U}/c`, `/kubepods/pod${U.toUpperCase()}/c`,
    `/system.slice/kubepods/pod${U}/c`, // not anchored at the root
    `/podid-test-2/kubepods/pod${U}/c`, // another parent than the one configured (none)
  ];
  for (const path of none) t.equal(podCgroupOf(path), undefined, path);
  t.equal(podCgroupOf(`/kubepods/pod${U}/c`, 'podid-test-1'), undefined, 'outside the configured parent');
  // A pod that delegates cgroups below its own (systemd in a container) cannot pose as another.
  t.equal(podCgroupOf(`/kubepods/pod${U}/c/kubepods/pod${other}/x`)?.uid, U);
  t.equal(podCgroupOf(`/kubepods.slice/kubepods-pod${S}.slice/c.scope/kubepods.slice/kubepods-pod${other.replaceAll('-', '_')}.slice`)?.uid, U);
});

t.test('ss output', async (t) => {
  const out = [
    'ESTAB 0 0 127.0.0.1:40000 169.254.169.254:80 cgroup:/kubepods/pod1/c',
    'ESTAB 0 0 [::ffff:127.0.0.1]:40001 [::ffff:127.0.0.1]:2579 cgroup:/kubepods/pod2/c   ',
    'TIME-WAIT 0 0 127.0.0.1:40002 169.254.169.254:80',
    'ESTAB 0 0 10.0.0.4:40003 169.254.169.254:80 cgroup:/a',
    'ESTAB 0 0 10.0.0.4:40003 169.254.169.9:80 cgroup:/b',
    'ESTAB 0 0 10.0.0.4%eth0:40004 169.254.169.254:80 cgroup:unreachable:1f2e',
    'ESTAB 0 0 [fd00::4]:40005 [fd00::1]:80 cgroup:/with space/c',
  ].join('\n');
  const m = parseSsCgroups(out);
  t.same(m.get('127.0.0.1:40000'), { kind: 'cgroup', path: '/kubepods/pod1/c' });
  t.same(m.get('127.0.0.1:40001'), { kind: 'cgroup', path: '/kubepods/pod2/c' }, 'IPv4-mapped folded to IPv4');
  t.equal(m.get('127.0.0.1:40002'), undefined, 'a socket without a cgroup (TIME-WAIT) names nothing');
  t.same(m.get('10.0.0.4:40003'), { kind: 'unavailable', why: 'ambiguous' }, 'one local endpoint, two cgroups');
  t.same(m.get('10.0.0.4:40004'), { kind: 'unavailable', why: 'failed' }, 'ss could not resolve the id');
  t.same(m.get('fd00::4:40005'), { kind: 'cgroup', path: '/with space/c' });
  t.equal(endpointKey('::ffff:10.0.0.4', 1), '10.0.0.4:1');
  t.equal(parseSsCgroups('').size, 0);
});

t.test('--host-token-callers', async (t) => {
  const rules = parseHostTokenCallers('kube-system/app=csi-secrets-store-provider-azure; ops/app=vault,tier=agent');
  t.same(rules, [
    { namespace: 'kube-system', labels: [['app', 'csi-secrets-store-provider-azure']] },
    { namespace: 'ops', labels: [['app', 'vault'], ['tier', 'agent']] },
  ]);
  const csi = pod({ name: 'csi', namespace: 'kube-system', ips: [], labels: { app: 'csi-secrets-store-provider-azure', x: 'y' } });
  t.ok(isAllowedCaller(csi, rules));
  t.notOk(isAllowedCaller({ ...csi, namespace: 'default' }, rules), 'namespace must match');
  t.notOk(isAllowedCaller({ ...csi, labels: { app: 'CSI-secrets-store-provider-azure' } }, rules), 'values are case-sensitive');
  t.notOk(isAllowedCaller(pod({ name: 'v', namespace: 'ops', ips: [], labels: { app: 'vault' } }), rules), 'every label must match');
  t.same(parseHostTokenCallers(''), [], 'empty allows nobody');
  for (const bad of ['kube-system', 'kube-system/', 'kube-system/app', 'kube-system/app!=x', 'kube-system/app==x', 'Kube/app=x', '/app=x', 'ns/app=x y']) {
    t.throws(() => parseHostTokenCallers(bad), /expected|is not label=value/, bad);
  }
});

t.test('the pod directory holds hostNetwork pods by UID and name, live ones only', async (t) => {
  const index = new ClusterIndex();
  const host = pod({ name: 'csi', namespace: 'kube-system', uid: U, ips: ['10.0.0.4'], hostNetwork: true });
  index.upsertPod(host);
  t.equal(index.podByUid(U), host);
  t.equal(index.podNamed('kube-system', 'csi'), host);
  t.same(index.podsAt('10.0.0.4'), [], 'still not in the IP index');
  index.upsertPod({ ...host, phase: 'Succeeded' });
  t.equal(index.podByUid(U), undefined, 'a finished pod is gone');
  index.upsertPod(host);
  // A StatefulSet replacement takes the name before the old pod's delete arrives.
  const next = { ...host, uid: 'ffffffff-0000-4000-8000-000000000000' };
  index.upsertPod(next);
  index.deletePod(U);
  t.equal(index.podNamed('kube-system', 'csi'), next, 'the old pod\'s delete leaves the new holder of the name');
  index.replaceKind('Pod', []);
  t.equal(index.podByUid(next.uid), undefined, 'a relist replaces the directory too');
  t.equal(index.podNamed('kube-system', 'csi'), undefined);
});

const TARGET = { metadataIp: '169.254.169.254', metadataPort: 80, targetIp: '127.0.0.1', targetPort: 2579 };

t.test('the hostNetwork chain', async (t) => {
  const own = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${S}.slice`;
  const desired = desiredHostRules(TARGET, { kubepods: ['kubepods.slice'], ownPodPath: own });
  t.same(desired, [
    `-A ${HOST_CHAIN} -m cgroup --path "${own}" -j RETURN`,
    `-A ${HOST_CHAIN} -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -m cgroup --path "kubepods.slice" -j DNAT --to-destination 127.0.0.1:2579`,
    `-A ${HOST_CHAIN} -j RETURN`,
  ], 'the daemon first, then every pod cgroup');
  const spec = { chain: HOST_CHAIN, hook: 'OUTPUT' } as const;
  const fresh = planChain(spec, null, ['-A OUTPUT -j KUBE-SERVICES'], desired);
  t.same(fresh.drift, ['chain_missing', 'jump_missing']);
  t.same(fresh.lines, [`:${HOST_CHAIN} - [0:0]`, ...desired, `-I OUTPUT 1 -j ${HOST_CHAIN}`]);
  t.same(planChain(spec, desired, [`-A OUTPUT -j ${HOST_CHAIN}`, '-A OUTPUT -j KUBE-SERVICES'], desired), { drift: [], lines: [] });
  const moved = planChain(spec, desired, ['-A OUTPUT -j KUBE-SERVICES', `-A OUTPUT -j ${HOST_CHAIN}`], desired);
  t.same(moved.lines, [`-D OUTPUT -j ${HOST_CHAIN}`, `-I OUTPUT 1 -j ${HOST_CHAIN}`]);
  const newPod = planChain(spec, desired, [`-A OUTPUT -j ${HOST_CHAIN}`], desiredHostRules(TARGET, { kubepods: ['kubepods.slice'], ownPodPath: undefined }));
  t.same(newPod.drift, ['chain_changed'], 'a restarted daemon in a new pod rewrites its exclusion');
});

t.test('what the rules need from the hierarchy', async (t) => {
  // A cgroup v2 hierarchy root always holds cgroup.controllers (what tells it from a v1 tmpfs).
  const root = t.testdir({ 'cgroup.controllers': '' });
  const noKubepods = hostRuleInput({ cgroupRoot: root, cgroupParent: '', ownCgroup: '/' });
  await t.rejects(noKubepods, /neither kubepods.slice nor kubepods exists under .*private cgroup namespace/);
  mkdirSync(join(root, 'kubepods.slice'));
  t.same(await hostRuleInput({ cgroupRoot: root, cgroupParent: '', ownCgroup: '/system.slice/x.service' }), { kubepods: ['kubepods.slice'], ownPodPath: undefined },
    'a daemon outside kubepods needs no exclusion: the rule does not match it');
  t.same(await hostRuleInput({ cgroupRoot: root, cgroupParent: '', ownCgroup: `/kubepods.slice/kubepods-pod${S}.slice/cri-containerd-1.scope` }),
    { kubepods: ['kubepods.slice'], ownPodPath: `kubepods.slice/kubepods-pod${S}.slice` });
  await t.rejects(hostRuleInput({ cgroupRoot: root, cgroupParent: '', ownCgroup: '/kubepods.slice/kubepods-burstable.slice' }), /in no pod cgroup/,
    'inside kubepods but in no pod: no safe exclusion');
  mkdirSync(join(root, 'p'));
  mkdirSync(join(root, 'p', 'kubepods'));
  t.same((await hostRuleInput({ cgroupRoot: root, cgroupParent: 'p', ownCgroup: '/' })).kubepods, ['p/kubepods']);
  await t.rejects(hostRuleInput({ cgroupRoot: root, cgroupParent: 'p" -j ACCEPT', ownCgroup: '/' }), /characters/);
  t.equal(ownCgroupFrom('12:memory:/x\n0::/kubepods/pod1/c\n'), '/kubepods/pod1/c');
  t.equal(ownCgroupFrom('12:memory:/x\n'), '');
});
