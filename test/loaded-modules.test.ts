// What the daemon loads is memory it holds on every node (docs/performance.md, Memory): the daemon as
// deployed (Kubernetes API source, JSON logs) loads no module it does not use. Each module
// below is loaded on first use; the controls show the recording sees them when they are used.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { seededApi, STATE_YAML } from './helpers/stack.ts';
import { freePort } from './helpers/ports.ts';

const CLI = new URL('../src/cli.ts', import.meta.url).pathname;

/** Modules nobody needs in the deployed daemon, by the path that gives them away. */
const UNUSED: Record<string, RegExp> = {
  'yaml (manifests files only)': /\/node_modules\/yaml\//,
  'pino-pretty (text logs only)': /\/node_modules\/pino-pretty\//,
  "client-node's generated models and API clients": /\/client-node\/dist\/gen\/(models|apis|types)\//,
  "Node's bundled undici (WebSocket, read by the ESM facade of node:http)": /^builtin:NativeModule internal\/deps\/undici\//,
};

/** Runs the daemon until its cluster state is ready, stops it, and returns every module URL it resolved, and node's own modules (`builtin:`). */
async function modulesLoaded(t: Test, flags: string[]): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'podid-modules-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const out = join(dir, 'modules.json');
  // Resolve hooks see import and require alike (node 24), so CommonJS loaded lazily is recorded too.
  const preload = `data:text/javascript,${encodeURIComponent(`
    import { registerHooks } from 'node:module';
    import { writeFileSync } from 'node:fs';
    const loaded = new Set();
    registerHooks({ resolve(s, c, next) { const r = next(s, c); loaded.add(r.url); return r; } });
    process.on('exit', () => writeFileSync(${JSON.stringify(out)}, JSON.stringify([...loaded, ...process.moduleLoadList.map((m) => 'builtin:' + m)])));
  `)}`;
  const ports = [await freePort(), await freePort(), await freePort()];
  const child = spawn(process.execPath, ['--import', preload, CLI, '--node=node-1', '--manage-iptables=false', '--probe-listen-address=127.0.0.1',
    `--nmi-port=${ports[0]}`, `--http-probe-port=${ports[1]}`, `--prometheus-port=${ports[2]}`, ...flags], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready state within 30 s: ${output}`)), 30_000);
    const on = (d: Buffer): void => {
      output += d.toString();
      if (/cluster state ready|podid-nmi listening/.test(output)) { clearTimeout(timer); resolve(); }
    };
    child.stdout!.on('data', on);
    child.stderr!.on('data', on);
    child.once('exit', (code) => { clearTimeout(timer); reject(new Error(`daemon exited ${code}: ${output}`)); });
  });
  child.removeAllListeners('exit');
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
  return JSON.parse(await readFile(out, 'utf8')) as string[];
}


t.test('the daemon as deployed (Kubernetes API, JSON logs) loads none of the modules it does not use', async (t) => {
  const api = await seededApi(t);
  const loaded = await modulesLoaded(t, [`--kubeconfig=${api.kubeconfig()}`, '--log-format=json']);
  t.ok(loaded.some((u) => u.endsWith('/client-node/dist/config.js')), 'the recording sees what the daemon loads');
  for (const [what, pattern] of Object.entries(UNUSED)) {
    t.same(loaded.filter((u) => pattern.test(u)), [], `not loaded: ${what}`);
  }
});

t.test('yaml loads for a manifests file, pino-pretty for text logs', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'podid-modules-state-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, 'state.yaml'), STATE_YAML);
  const loaded = await modulesLoaded(t, [`--cluster-state=${join(dir, 'state.yaml')}`, '--log-format=text']);
  t.ok(loaded.some((u) => UNUSED['yaml (manifests files only)']!.test(u)), 'yaml');
  t.ok(loaded.some((u) => UNUSED['pino-pretty (text logs only)']!.test(u)), 'pino-pretty');
});
