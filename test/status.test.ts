// `nmi status` against a running daemon: healthy, rules missing and repaired, state stale, IMDS
// failing, unreachable; the admin socket's permissions; --interception=external's readiness.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { lstat, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort } from './helpers/ports.ts';
import { eventually } from './helpers/eventually.ts';
import { FakeIptables } from './helpers/fake-iptables.ts';
import { META } from './helpers/http.ts';
import { seededApi, startStack, TOKEN, type Stack } from './helpers/stack.ts';
import { CommandError, type CommandRunner } from '../src/iptables/run-command.ts';
import { STATUS_EXIT, type NodeStatus } from '../src/status/node-status.ts';
import { runStatus } from '../src/status/status-cli.ts';
import { startAdminServer } from '../src/status/admin-server.ts';

const CLI = new URL('../src/cli.ts', import.meta.url).pathname;
const FAST_FRESHNESS = { probeIntervalMs: 200, probeTimeoutMs: 1_000, staleAfterS: 2 };

interface Run { code: number; out: string; err: string }

/** A short directory: a unix socket's path must fit in 108 bytes, which tap's fixture paths do not. */
async function shortDir(t: Test): Promise<string> {
  const dir = await mkdtemp('/tmp/podid-adm-');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function status(socket: string, ...flags: string[]): Promise<Run> {
  let out = '';
  let err = '';
  const code = await runStatus(['--admin-socket', socket, ...flags], { stdout: (s) => { out += s; }, stderr: (s) => { err += s; } });
  return { code, out, err };
}

async function json(socket: string): Promise<NodeStatus> {
  const r = await status(socket, '--output', 'json');
  return JSON.parse(r.out) as NodeStatus;
}

/** The daemon with its admin socket, and its rules written to a fake iptables (never the machine's). */
async function daemonWithRules(t: Test, o: { failWrites?: () => boolean; intervalSec?: number; flags?: string[]; kubeconfig?: string; daemon?: object } = {}): Promise<{ s: Stack; socket: string; fake: () => FakeIptables }> {
  const socket = join(await shortDir(t), 'run', 'admin.sock');
  const port = await freePort();
  let fake: FakeIptables | undefined;
  const run: CommandRunner = async (cmd, args, opts) => {
    if (o.failWrites?.() === true && cmd.endsWith('-restore')) {
      throw new CommandError([cmd, ...args], { stdout: '', stderr: 'iptables-restore: Permission denied (you must be root)', code: 4 }, 'exit 4');
    }
    return fake!.run(cmd, args, opts);
  };
  const s = await startStack(t, {
    kubeconfig: o.kubeconfig,
    flags: ['--manage-iptables=true', `--nmi-port=${port}`, `--admin-socket=${socket}`, ...(o.flags ?? [])],
    configure: (c) => {
      fake = new FakeIptables({ metadataIp: c.metadataIp, metadataPort: c.metadataPort, targetIp: '127.0.0.1', targetPort: c.listenPort });
      c.iptUpdateIntervalSec = o.intervalSec ?? 60;
    },
    daemon: { iptables: { run, backend: 'nft' }, ...o.daemon },
  });
  return { s, socket, fake: () => fake! };
}

t.test('healthy: rules in place, state synced, IMDS answering: OK and exit 0', async (t) => {
  const { s, socket, fake } = await daemonWithRules(t, { flags: ['--intercept-host-network=false'] });
  t.ok(fake().installed, 'the daemon wrote its rules (to the fake)');
  t.equal((await s.ask(TOKEN, { from: '127.0.0.10', headers: META })).status, 200);
  const r = await status(socket);
  t.equal(r.code, STATUS_EXIT.ok, r.out + r.err);
  t.match(r.out, /^podid-nmi \S+ on node node-1 \(pid \d+, up \d+ s\): OK\n/);
  t.match(r.out, /interception iptables \(nft\), rules in place, route_localnet guard in place, route_localnet 1, last good check 20\d\d-/);
  t.match(r.out, /state        file, synced; --max-state-staleness off/);
  t.match(r.out, /imds         0 in flight/);
  t.match(r.out, /last 5 min: 1 answered, 0 failed; last success 20\d\d-/);
  t.match(r.out, /token cache  1 entries/);
  const j = await json(socket);
  t.equal(j.health, 'ok');
  t.same(j.problems, []);
  t.same(j.readiness, { ready: true, reasons: [] });
  t.same(j.mode, { operation: 'managed', forceNamespaced: false });
  t.match(j.interception, { mode: 'iptables', backend: 'nft', rulesInstalled: true, routeLocalnet: true, lastError: null, hostNetworkRules: false });
  t.equal(j.pid, process.pid);
  t.match(j.budgets[0], { source: 'imds', inFlight: 0, answered: 1, failed: 0, failing: false, limits: { maxRps: 19, maxConcurrency: 4 } });
  t.match(j.budgets[1], { source: 'entra', inFlight: 0, answered: 0, failed: 0, failing: false, limits: { maxRps: 50, maxConcurrency: 16 } }, 'Entra\'s budget beside IMDS\'s');
  t.match(j.state, { source: 'file', synced: true, stale: false });
  t.equal(j.state.counts.pods, 6);
  const ready = await status(socket, '--check', 'ready');
  t.same(ready, { code: 0, out: 'ready\n', err: '' }, '--check ready');
});

t.test('rules missing: not ready with the failing command, exit 4; then repaired, the repair counted', async (t) => {
  let failing = true;
  const { socket, fake } = await daemonWithRules(t, { failWrites: () => failing, intervalSec: 0.1 });
  const r = await status(socket);
  t.equal(r.code, STATUS_EXIT.not_ready, r.out);
  t.match(r.out, /: NOT READY\n  - interception rules not installed \(retried every --ipt-update-interval-sec\): write_rules: .*Permission denied/);
  t.match(r.out, /RULES NOT IN PLACE/);
  t.match(r.out, /last error: write_rules: /);
  const j = await json(socket);
  t.equal(j.health, 'not_ready');
  t.equal(j.interception.rulesInstalled, false);
  t.ok((j.interception.failures.write_rules ?? 0) >= 1, 'the failed operation is counted');
  t.ok(j.errors.entries.some((e) => e.level === 'error' && e.component === 'iptables' && /Permission denied/.test(e.detail ?? '')), 'the error is among the recent ones');
  const check = await status(socket, '--check', 'ready');
  t.equal(check.code, STATUS_EXIT.not_ready);
  t.match(check.err, /^not ready: interception rules not installed/);
  failing = false;
  await eventually(async () => (await json(socket)).health === 'ok', 'the next check installs the rules');
  t.ok(fake().installed);
  fake().wipe();
  await eventually(async () => Object.keys((await json(socket)).interception.repairs).length > 0, 'the drift is repaired and counted');
  const after = await json(socket);
  t.match(after.interception, { rulesInstalled: true, lastError: null });
  t.match(await status(socket), { code: 0, out: /repairs: \w+=\d/ });
});

t.test('state stale: degraded, exit 3, with the age of each resource; fresh again once the API answers', async (t) => {
  const api = await seededApi(t);
  const { s, socket } = await daemonWithRules(t, { kubeconfig: api.kubeconfig(), flags: ['--pod-events=false'], daemon: { freshness: FAST_FRESHNESS } });
  await s.daemon.state.whenReady(AbortSignal.timeout(10_000));
  await eventually(async () => (await json(socket)).health === 'ok', 'ready and fresh');
  const fresh = await json(socket);
  t.same(fresh.state.resources.map((r) => r.resource).sort(), ['azureidentities', 'azureidentitybindings', 'azurepodidentityexceptions', 'pods']);
  t.ok(fresh.state.resources.every((r) => r.synced && r.ageSeconds !== null), 'every resource synced, with an age');
  api.hang();
  await eventually(async () => (await json(socket)).state.stale, 'the silence is noticed');
  await eventually(async () => (await json(socket)).errors.entries.some((e) => /stale/.test(e.message)), 'and logged');
  const r = await status(socket);
  t.equal(r.code, STATUS_EXIT.degraded, r.out);
  t.match(r.out, /: DEGRADED\n  - cluster state is stale: the Kubernetes API last confirmed it \d+ s ago\n/);
  t.match(r.out, /state        Kubernetes API, synced, STALE/);
  t.match(r.out, /pods\s+synced, confirmed [\d.]+ s ago, 0 errors/);
  t.match(r.out, /warn informers: cluster state is stale/);
  t.equal((await status(socket, '--check', 'ready')).code, 0, 'stale is degraded, not unready: tokens are still served');
  api.unhang();
  await eventually(async () => (await json(socket)).health === 'ok', 'fresh again');
});

t.test('IMDS failing: degraded with the last failure, exit 3; ok again after a success', async (t) => {
  const { s, socket } = await daemonWithRules(t, { flags: ['--token-cache=false'] });
  s.emulator.setFault({ kind: 'reset' });
  const failed = await s.ask(TOKEN, { from: '127.0.0.10', headers: META });
  t.equal(failed.status, 503, 'the pod gets a retryable answer');
  const r = await status(socket);
  t.equal(r.code, STATUS_EXIT.degraded, r.out);
  t.match(r.out, /: DEGRADED\n  - imds is failing: last call \w+ at 20\d\d-.*\(1 of 1 calls failed in 300 s\)/);
  t.match(r.out, /warn: token request failed upstream/);
  const j = await json(socket);
  t.match(j.budgets[0], { source: 'imds', failed: 1, answered: 0, failing: true });
  s.emulator.setFault(undefined);
  t.equal((await s.ask(TOKEN, { from: '127.0.0.10', headers: META })).status, 200);
  const after = await json(socket);
  t.equal(after.health, 'ok');
  t.match(after.budgets[0], { failed: 1, answered: 1, failing: false });
});

t.test('the CLI as a process: exit codes, --output json, and no daemon to reach', async (t) => {
  const { socket } = await daemonWithRules(t);
  const run = (args: string[]): Promise<Run> => new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, 'status', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.once('exit', (code) => resolve({ code: code ?? -1, out, err }));
  });
  const ok = await run(['--admin-socket', socket, '--output=json']);
  t.equal(ok.code, 0, ok.err);
  t.equal((JSON.parse(ok.out) as NodeStatus).health, 'ok');
  t.match(await run(['--admin-socket', socket, '--check', 'ready']), { code: 0, out: 'ready\n' });
  const gone = await run(['--admin-socket', join(await shortDir(t), 'none.sock')]);
  t.equal(gone.code, STATUS_EXIT.unreachable);
  t.match(gone.err, /^nmi status: cannot reach the daemon at .*none\.sock: .*ENOENT/);
  const bad = await run(['--output', 'yaml']);
  t.equal(bad.code, 2);
  t.match(bad.err, /^nmi status: flag --output: "yaml" is not text or json\n/);
  t.match(await run(['--check', 'live']), { code: 2, err: /flag --check: "live" is not ready/ });
  t.match(await run(['--nope=1']), { code: 2, err: /unknown flag --nope/ });
  t.match(await run(['--help']), { code: 0, out: /Exit status: 0 ok .* 3 degraded .*\n4 not ready, 5 the daemon cannot be reached, 2 bad command line/s });
});

t.test('the admin socket: mode 0600 in a 0700 directory, a stale socket replaced, anything else refused, removed on close', async (t) => {
  const dir = join(await shortDir(t), 'run');
  const path = join(dir, 'admin.sock');
  const first = await startAdminServer({ path, ready: () => ({ ready: true }), status: () => Promise.reject(new Error('unused')) });
  t.equal((await lstat(path)).mode & 0o777, 0o600);
  t.equal((await lstat(dir)).mode & 0o777, 0o700);
  // A crash leaves the socket file behind: the next start takes its place.
  const second = await startAdminServer({ path, ready: () => ({ ready: false, reasons: ['shutting down'] }), status: () => Promise.reject(new Error('collect failed')) });
  t.match(await status(path, '--check', 'ready'), { code: STATUS_EXIT.not_ready, err: 'not ready: shutting down\n' });
  t.match(await status(path), { code: STATUS_EXIT.unreachable, err: /answered 500: status failed: collect failed/ });
  await second.close();
  await first.close();
  await t.rejects(lstat(path), { code: 'ENOENT' }, 'removed on close');
  const file = join(dir, 'not-a-socket');
  await mkdir(dir, { recursive: true });
  await writeFile(file, 'keep me');
  await t.rejects(startAdminServer({ path: file, ready: () => ({ ready: true }), status: () => Promise.reject(new Error('x')) }), /exists and is not a socket/);
  t.ok((await lstat(file)).isFile(), 'the file is left alone');
});

t.test('--interception=external: no rules, ready once the state is synced, and status says nothing checks the redirect', async (t) => {
  const api = await seededApi(t);
  // The first lists of pods fail: the daemon retries them with backoff, and is ready only after.
  api.failNext(3, { resource: 'pods', watch: false, status: 503 });
  const socket = join(await shortDir(t), 'admin.sock');
  const calls: string[] = [];
  const record: CommandRunner = async (cmd) => { calls.push(cmd); throw new Error('no command runs with external interception'); };
  const s = await startStack(t, {
    kubeconfig: api.kubeconfig(), flags: ['--interception=external', `--admin-socket=${socket}`, '--pod-events=false'],
    daemon: { iptables: { run: record, backend: 'nft' } },
  });
  t.notOk(s.daemon.isReady(), 'not ready before the state is synced');
  t.match(await status(socket, '--check', 'ready'), { code: STATUS_EXIT.not_ready, err: 'not ready: cluster state not synced yet\n' });
  await eventually(() => s.daemon.isReady(), 'ready once synced, with no rules');
  t.same(calls, [], 'no iptables command ran');
  const probe = await fetch(`http://127.0.0.1:${s.daemon.probes.address.port}/readyz`);
  t.equal(probe.status, 200, '/readyz over HTTP agrees');
  t.equal(await probe.text(), 'ready\n');
  const r = await status(socket);
  t.equal(r.code, 0, r.out);
  t.match(r.out, /interception external: this daemon installs no rules; nothing here checks that the redirect to it is in place/);
  t.match(s.logs.join('\n'), /interception is external \(--interception=external\): no rules are installed here/);
  const j = await json(socket);
  t.match(j.interception, { mode: 'external', rulesInstalled: null, backend: null });
});

t.test('--manage-iptables=false stays never ready, and says so in the status', async (t) => {
  const socket = join(await shortDir(t), 'admin.sock');
  const s = await startStack(t, { flags: [`--admin-socket=${socket}`] });
  await s.daemon.state.whenReady(AbortSignal.timeout(10_000));
  t.notOk(s.daemon.isReady());
  const r = await status(socket);
  t.equal(r.code, STATUS_EXIT.not_ready);
  t.match(r.out, /interception none \(--manage-iptables=false\)/);
  t.match(r.out, /  - not intercepting: started with --manage-iptables=false/);
});

t.test('the readiness check loads only the status client: no pino, no flag table, no bundled undici', async (t) => {
  const { socket } = await daemonWithRules(t);
  const out = join(await shortDir(t), 'modules.json');
  const preload = `data:text/javascript,${encodeURIComponent(`
    import { registerHooks } from 'node:module';
    import { writeFileSync } from 'node:fs';
    const loaded = new Set();
    registerHooks({ resolve(s, c, next) { const r = next(s, c); loaded.add(r.url); return r; } });
    process.on('exit', () => writeFileSync(${JSON.stringify(out)}, JSON.stringify([...loaded, ...process.moduleLoadList.map((m) => 'builtin:' + m)])));
  `)}`;
  const code = await new Promise((resolve) => {
    spawn(process.execPath, ['--import', preload, CLI, 'status', '--check', 'ready', '--admin-socket', socket], { stdio: 'ignore' }).once('exit', resolve);
  });
  t.equal(code, 0, 'ready');
  const { readFile } = await import('node:fs/promises');
  const loaded = JSON.parse(await readFile(out, 'utf8')) as string[];
  t.ok(loaded.some((u) => u.endsWith('/src/status/status-cli.ts')), 'the recording sees the status client');
  for (const [what, pattern] of [['pino', /\/node_modules\/pino\//], ['the flag table', /\/src\/config\/flags\.ts$/], ['prom-client', /\/node_modules\/prom-client\//],
    ["Node's bundled undici", /^builtin:NativeModule internal\/deps\/undici\//]] as Array<[string, RegExp]>) {
    t.notOk(loaded.some((u) => pattern.test(u)), `${what} is not loaded`);
  }
});
