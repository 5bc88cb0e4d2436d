// Starting the end-to-end daemon with an upstream NMI command line (test/fixtures/upstream-nmi-args.ts),
// and what every such run checks: NMI's chain in place, and pod A's token through the DNAT.
import type { Test } from 'tap';
import { toDaemonConfig, type DaemonConfig } from '../../src/config/daemon-config.ts';
import { parseFlags } from '../../src/config/flags.ts';
import { decodeFakeToken } from '../../src/emulator/imds-emulator.ts';
import { containerCommandLine, type UpstreamArgSet } from '../fixtures/upstream-nmi-args.ts';
import { IDS, NODE_GATEWAY, NODE_NAME, RESOURCE, rebuiltTokenUrl } from './cluster.ts';
import type { DaemonLaunch, DaemonRun, E2E } from './environment.ts';

export const TOKEN = `/metadata/identity/oauth2/token?api-version=2018-02-01&resource=${RESOURCE}`;
export const DNAT = '-A aad-metadata ! -s 127.0.0.1/32 -d 169.254.169.254/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:2579';
export const CHAIN = ['-N aad-metadata', DNAT, '-A aad-metadata -j RETURN'];
/** Generous: these machines are shared, and a daemon start under load takes seconds. */
export const READY_TIMEOUT_MS = 120_000;
/** The daemon reaches the emulator on the node's lo: from either of these, never from a pod. */
const NODE_ADDRESSES = ['127.0.0.1', '169.254.169.254'];

/** The set's own command line, then only what this environment needs: its kubeconfig, JSON logs for the harness. */
export function launchFor(env: E2E, set: UpstreamArgSet, extra: string[] = [], processEnv: Record<string, string> = {}): DaemonLaunch {
  const { argv, env: containerEnv } = containerCommandLine(set, { nodeName: NODE_NAME, nodeIp: NODE_GATEWAY });
  return { argv: [...argv, '--kubeconfig', env.kubeconfig, '--log-format=json', ...extra], env: { ...containerEnv, ...processEnv } };
}

/** The configuration the daemon computes from that launch. */
export function configOf(launch: DaemonLaunch): DaemonConfig {
  const parsed = parseFlags(launch.argv, launch.env);
  return toDaemonConfig(parsed.values, launch.env, parsed.given);
}

/** Deletes NMI's chain and jump in the node namespace, so that the next start must install them. */
export async function removeRules(env: E2E): Promise<void> {
  await env.iptables('-D', 'PREROUTING', '-j', 'aad-metadata');
  await env.iptables('-F', 'aad-metadata');
  await env.iptables('-X', 'aad-metadata');
}

/** Runs `body` with a daemon started from `launch` (not waiting for readiness); always stops it after. */
export async function withDaemon(t: Test, env: E2E, launch: DaemonLaunch, body: (run: DaemonRun) => Promise<void>): Promise<void> {
  const run = env.spawnDaemon(launch);
  try {
    await body(run);
  } finally {
    t.equal(await env.stopDaemon(), 0, 'SIGTERM stops it with status 0');
  }
}

export async function grantedThroughDnat(t: Test, env: E2E, expectedUserAgent: string, what: string): Promise<void> {
  const before = (await env.imdsRequests()).length;
  const r = await env.curl('a', TOKEN);
  t.equal(r.status, 200, `${what}: pod A gets 200 through the DNAT (${r.status} ${r.body.slice(0, 200)})`);
  t.equal(r.json?.client_id, IDS.A.clientID, `${what}: for identity A`);
  const minted = typeof r.json?.access_token === 'string' ? decodeFakeToken(r.json.access_token)?.client_id : undefined;
  t.equal(minted, IDS.A.clientID, `${what}: the token itself is A's`);
  const fresh = (await env.imdsRequests()).slice(before);
  // A new daemon has an empty token cache: it asks once.
  t.same(fresh.map((q) => q.url), [rebuiltTokenUrl(IDS.A.clientID)], `${what}: IMDS was asked once, rebuilt`);
  const from = fresh.map((q) => q.remoteAddress.replace(/^::ffff:/, ''));
  t.ok(from.every((a) => NODE_ADDRESSES.includes(a)), `${what}: by the daemon on the node, not by the pod (${from.join(', ')})`);
  t.equal(fresh[0]?.headers['user-agent'], expectedUserAgent, `${what}: IMDS sees User-Agent ${expectedUserAgent}`);
}
