// /readyz's decision: ready only when pods' metadata traffic reaches the daemon and it can
// decide; otherwise every reason, in words an operator can act on.
import t from 'tap';
import type { InterceptionStatus } from '../src/iptables/index.ts';
import { NOT_INTERCEPTING, readiness, readinessText, type ReadinessInputs } from '../src/probes/readiness.ts';

const installed: InterceptionStatus = {
  backend: 'nft', rulesInstalled: true, routeLocalnet: true, localnetGuard: { installed: true, error: null },
  hostNetwork: { installed: true, error: null }, lastSuccess: new Date(0), lastError: null,
};
const OK: ReadinessInputs = { closing: false, stateReady: true, manageIptables: true, interception: installed };

t.test('ready only with rules in place, route_localnet on (or not needed), state synced, not closing', async (t) => {
  t.same(readiness(OK), { ready: true });
  t.same(readiness({ ...OK, interception: { ...installed, routeLocalnet: null, localnetGuard: null } }), { ready: true }, 'a non-loopback target needs no route_localnet nor guard');
  t.same(readiness({ ...OK, interception: { ...installed, hostNetwork: null } }), { ready: true }, 'no hostNetwork chain without --intercept-host-network');
  t.equal(readinessText(readiness(OK)), 'ready\n');
});

t.test('each reason', async (t) => {
  const cases: Array<[string, Partial<ReadinessInputs>, string[]]> = [
    ['--manage-iptables=false', { manageIptables: false, interception: undefined }, [NOT_INTERCEPTING]],
    ['before the first check', { interception: undefined }, ['interception rules not checked yet']],
    ['rules could not be installed', { interception: { ...installed, rulesInstalled: false, lastError: 'iptables-nft -w 5 -t nat -S PREROUTING: could not run (ENOENT)' } },
      ['interception rules not installed (retried every --ipt-update-interval-sec): iptables-nft -w 5 -t nat -S PREROUTING: could not run (ENOENT)']],
    ['route_localnet 0', { interception: { ...installed, routeLocalnet: false } },
      ['net.ipv4.conf.all.route_localnet is 0 and could not be set: the DNAT to 127.0.0.1 is dropped by the kernel']],
    ['guard missing: the sysctl was left off', { interception: { ...installed, routeLocalnet: false, localnetGuard: { installed: false, error: 'iptables-nft-restore: exit 2: Couldn\'t load match `conntrack\'' } } },
      ['route_localnet guard (filter chain PODID-NMI-LOCALNET) not installed, so route_localnet is not turned on: iptables-nft-restore: exit 2: Couldn\'t load match `conntrack\'']],
    ['only the hostNetwork chain missing: not ready, and it says pods are served', {
      interception: { ...installed, hostNetwork: { installed: false, error: 'neither kubepods.slice nor kubepods exists under /sys/fs/cgroup' } },
    }, ['hostNetwork interception not in place (pod-network interception is, and pods are served): neither kubepods.slice nor kubepods exists under /sys/fs/cgroup']],
    ['state not synced', { stateReady: false }, ['cluster state not synced yet']],
    ['--attest-pod-sockets cannot see the node', { attestation: 'socket attestation unavailable: no kubelet pod cgroups' }, ['socket attestation unavailable: no kubelet pod cgroups']],
    ['closing', { closing: true }, ['shutting down']],
    ['several at once, all named', { closing: true, manageIptables: false, stateReady: false }, ['shutting down', NOT_INTERCEPTING, 'cluster state not synced yet']],
  ];
  for (const [what, change, reasons] of cases) {
    const r = readiness({ ...OK, ...change });
    t.same(r, { ready: false, reasons }, what);
    t.equal(readinessText(r), `not ready: ${reasons.join('; ')}\n`, `${what}: /readyz body`);
  }
  t.match(NOT_INTERCEPTING, /--manage-iptables=false/, 'names the flag');
});
