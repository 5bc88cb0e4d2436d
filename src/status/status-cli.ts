// `nmi status`: the running daemon's own view of its node, read from its admin socket. Run it in
// the daemon's container (kubectl exec ds/podid-nmi -c nmi -- nmi status). It is also the
// readiness probe (`nmi status --check ready`), so it stays cheap to start: it parses its few
// flags itself and loads node:http through getBuiltinModule, whose ES import would also load
// Node's bundled undici (src/runtime/lean-builtins.ts); nothing of the daemon is loaded.
import type { IncomingMessage } from 'node:http';
import { STATUS_EXIT, type NodeStatus } from './node-status.ts';

export const DEFAULT_ADMIN_SOCKET = '/var/run/podid-nmi/admin.sock';

export const STATUS_USAGE = `Usage: nmi status [--admin-socket PATH] [--output text|json] [--check ready] [--timeout-seconds N]

Prints what the daemon on this node sees: mode, interception, caller attribution, cluster state
freshness per resource, the IMDS budget and queues, and the warnings and errors of the last minutes.
Run it where the daemon runs: kubectl -n kube-system exec ds/podid-nmi -c nmi -- nmi status

  --admin-socket PATH   the daemon's --admin-socket (default ${DEFAULT_ADMIN_SOCKET})
  --output text|json    text for people, json for scripts (default text)
  --check ready         only whether the daemon is ready (the DaemonSet's readiness probe)
  --timeout-seconds N   how long to wait for the daemon (default 5)

Exit status: ${STATUS_EXIT.ok} ok (or ready, with --check ready), ${STATUS_EXIT.degraded} degraded (ready, but something needs a look),
${STATUS_EXIT.not_ready} not ready, ${STATUS_EXIT.unreachable} the daemon cannot be reached, 2 bad command line.
`;

export interface StatusIo {
  stdout(text: string): void;
  stderr(text: string): void;
}

interface StatusArgs { socket: string; output: 'text' | 'json'; check: 'ready' | undefined; timeoutMs: number; help: boolean }

class UsageError extends Error {}

function parseArgs(argv: readonly string[]): StatusArgs {
  const out: StatusArgs = { socket: DEFAULT_ADMIN_SOCKET, output: 'text', check: undefined, timeoutMs: 5_000, help: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const m = /^--?([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (m === null) throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
    const name = m[1]!;
    if (name === 'help' || name === 'h') { out.help = true; continue; }
    const value = m[2] ?? argv[++i];
    if (value === undefined) throw new UsageError(`flag --${name} needs a value`);
    switch (name) {
      case 'admin-socket':
        if (value === '') throw new UsageError('flag --admin-socket: give the socket\'s path');
        out.socket = value;
        break;
      case 'output':
        if (value !== 'text' && value !== 'json') throw new UsageError(`flag --output: ${JSON.stringify(value)} is not text or json`);
        out.output = value;
        break;
      case 'check':
        if (value !== 'ready') throw new UsageError(`flag --check: ${JSON.stringify(value)} is not ready`);
        out.check = value;
        break;
      case 'timeout-seconds': {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 1 || n > 300) throw new UsageError(`flag --timeout-seconds: ${JSON.stringify(value)} is not a whole number of seconds from 1 to 300`);
        out.timeoutMs = n * 1000;
        break;
      }
      default:
        throw new UsageError(`unknown flag --${name}`);
    }
  }
  return out;
}

export async function runStatus(argv: readonly string[], io: StatusIo): Promise<number> {
  let args: StatusArgs;
  try {
    args = parseArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr(`nmi status: ${err.message}\n${STATUS_USAGE}`);
    return 2;
  }
  if (args.help) {
    io.stdout(STATUS_USAGE);
    return 0;
  }
  let answer: { status: number; body: string };
  try {
    answer = await get(args.socket, args.check === 'ready' ? '/readyz' : '/status', args.timeoutMs);
  } catch (err) {
    io.stderr(`nmi status: cannot reach the daemon at ${args.socket}: ${(err as Error).message}\n`);
    return STATUS_EXIT.unreachable;
  }
  if (args.check === 'ready') {
    (answer.status === 200 ? io.stdout : io.stderr)(answer.body);
    return answer.status === 200 ? STATUS_EXIT.ok : answer.status === 503 ? STATUS_EXIT.not_ready : STATUS_EXIT.unreachable;
  }
  if (answer.status !== 200) {
    io.stderr(`nmi status: the daemon answered ${answer.status}: ${answer.body}`);
    return STATUS_EXIT.unreachable;
  }
  const status = JSON.parse(answer.body) as NodeStatus;
  io.stdout(args.output === 'json' ? answer.body : statusText(status));
  return STATUS_EXIT[status.health];
}

function get(socketPath: string, path: string, timeoutMs: number): Promise<{ status: number; body: string }> {
  const http = process.getBuiltinModule('node:http');
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath, path, timeout: timeoutMs, headers: { host: 'admin' } }, (res: IncomingMessage) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => { body += chunk; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)));
    req.on('error', reject);
  });
}

const HEALTH_WORD = { ok: 'OK', degraded: 'DEGRADED', not_ready: 'NOT READY' } as const;

/** The status for a person at a terminal: one screen, the verdict first. */
export function statusText(s: NodeStatus): string {
  const lines: string[] = [];
  const push = (label: string, text: string): void => { lines.push(`${label.padEnd(13)}${text}`); };
  lines.push(`podid-nmi ${s.version} on node ${s.node} (pid ${s.pid}, up ${duration(s.uptimeSeconds)}): ${HEALTH_WORD[s.health]}`);
  for (const p of s.problems) lines.push(`  - ${p}`);
  push('mode', `${s.mode.operation}${s.mode.forceNamespaced ? ', namespaced' : ''}`);
  push('ready', s.readiness.ready ? 'yes' : 'no (the reasons are above)');
  const i = s.interception;
  if (i.mode === 'iptables') {
    const parts = [`iptables (${i.backend ?? 'backend not detected yet'})`, i.rulesInstalled ? 'rules in place' : 'RULES NOT IN PLACE'];
    if (i.hostNetworkRules) parts.push(i.hostNetwork?.installed === false ? 'HOSTNETWORK CHAIN NOT IN PLACE' : 'with the hostNetwork chain');
    if (i.localnetGuard !== null) parts.push(i.localnetGuard.installed ? 'route_localnet guard in place' : 'ROUTE_LOCALNET GUARD NOT IN PLACE');
    if (i.routeLocalnet !== null) parts.push(`route_localnet ${i.routeLocalnet ? '1' : '0'}`);
    parts.push(`last good check ${i.lastCheck ?? 'never'}`);
    push('interception', parts.join(', '));
    if (i.lastError !== null) push('', `last error: ${i.lastError}`);
    if (i.hostNetwork?.error != null) push('', `hostNetwork chain: ${i.hostNetwork.error}`);
    if (i.localnetGuard?.error != null) push('', `route_localnet guard: ${i.localnetGuard.error}`);
    push('', `repairs: ${pairs(i.repairs)}; failures: ${pairs(i.failures)}`);
  } else if (i.mode === 'external') {
    push('interception', 'external: this daemon installs no rules; nothing here checks that the redirect to it is in place');
  } else {
    push('interception', 'none (--manage-iptables=false): nothing redirects pods\' metadata traffic here');
  }
  const a = s.attribution;
  const strategies = Object.entries(a.strategies).map(([name, v]) => `${name} ${typeof v === 'string' ? v : JSON.stringify(v)}`);
  push('callers', ['source IP', a.socketCgroup ? `socket cgroup for hostNetwork pods (${a.socketCgroupLookupsPending} lookups pending)` : 'hostNetwork pods not attributed (--intercept-host-network=false)', ...strategies].join('; '));
  const st = s.state;
  push('state', `${st.source === 'file' ? 'file' : 'Kubernetes API'}, ${st.synced ? 'synced' : 'NOT SYNCED'}${st.stale ? ', STALE' : ''}; --max-state-staleness ${st.maxStalenessSeconds === 0 ? 'off' : `${st.maxStalenessSeconds} s`}`);
  for (const r of st.resources) {
    push('', `${r.resource.padEnd(26)} ${r.synced ? 'synced' : 'not synced'}, ${r.ageSeconds === null ? 'age unknown' : `confirmed ${r.ageSeconds} s ago`}, ${r.errors} errors`);
  }
  push('objects', Object.entries(st.counts).map(([k, v]) => `${k} ${v}`).join(', '));
  for (const b of s.budgets) {
    const queued = Object.entries(b.queued).map(([k, v]) => `${k} ${v}`).join(', ');
    push(b.source, `${b.inFlight} in flight, queued: ${queued}; limits ${pairs(b.limits)}`);
    push('', `last ${duration(b.windowSeconds)}: ${b.answered} answered, ${b.failed} failed; last success ${b.lastSuccess ?? 'never'}${b.lastFailure !== null ? `, last failure ${b.lastFailure.result} at ${b.lastFailure.at}` : ''}`);
  }
  push('token cache', s.tokenCache.enabled ? `${s.tokenCache.entries} entries` : 'off (--token-cache=false)');
  lines.push(`warnings and errors, last ${duration(s.errors.windowSeconds)}:${s.errors.entries.length === 0 ? ' none' : ''}`);
  for (const e of s.errors.entries) {
    lines.push(`  ${e.last} ${e.level}${e.component !== null ? ` ${e.component}` : ''}: ${e.message}${e.count > 1 ? ` (x${e.count} since ${e.first})` : ''}${e.detail !== null ? `: ${e.detail}` : ''}`);
  }
  return `${lines.join('\n')}\n`;
}

function pairs(r: Record<string, number>): string {
  const e = Object.entries(r);
  return e.length === 0 ? 'none' : e.map(([k, v]) => `${k}=${v}`).join(' ');
}

function duration(s: number): string {
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}
