// The project's image, built here from the Dockerfile as it is and run as the DaemonSet runs
// it. No registry is reachable from these machines, so the Dockerfile's bases are local
// stand-ins (REFERENCE.md section 7): docker.io/library/debian:bookworm-slim is a Debian
// bookworm minbase made by mmdebstrap and slimmed as Debian's image is, and
// docker.io/library/node:24-bookworm-slim adds the pinned Node binary, npm, corepack and yarn
// (node-base.Containerfile). Both are cached in podman's storage under a tag that hashes their
// inputs, so only the first run on a machine pays for them.
//
// Machine safety: podman's default network (netavark) writes NAT rules into the machine's own
// namespace, so builds use --network host and containers --network none or ns:<a namespace a
// test made>. Every container started here is removed (--rm, and `podman rm -f` on teardown).
//
// Run by hand: node test/image/podman.ts build   (prints the image's tag and size)
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url));
export const ROOT = here('../../');
const BASE_CONTAINERFILE = here('./node-base.Containerfile');
/** default_ulimits = []: the sandbox refuses setrlimit; runc: crun refuses hybrid cgroup hosts. */
export const CONTAINERS_CONF = here('./containers.conf');

export const IMAGE = 'localhost/podid-nmi:test';
const BUILD_STAGE = 'localhost/podid-nmi-build-stage:test';
const DEBIAN = 'docker.io/library/debian:bookworm-slim';
const NODE = 'docker.io/library/node:24-bookworm-slim';
const STANDIN_REPO = 'localhost/podid-nmi-standin';

// What node:24-bookworm-slim ships beside node; versions as of Node 24's line.
const BASE_TOOLS = ['npm@11.19.1', 'corepack@0.34.0', 'yarn@1.22.22'];
// Debian's slim images drop man pages, docs (but copyrights) and translations through dpkg
// filters, and clean apt's caches after each install (debuerreotype); the minbase does the same.
const MMDEBSTRAP_ARGS = [
  '--variant=minbase', '--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr',
  '--dpkgopt=path-exclude=/usr/share/man/*', '--dpkgopt=path-exclude=/usr/share/info/*',
  '--dpkgopt=path-exclude=/usr/share/locale/*', '--dpkgopt=path-include=/usr/share/locale/locale.alias',
  '--dpkgopt=path-exclude=/usr/share/doc/*', '--dpkgopt=path-include=/usr/share/doc/*/copyright',
  '--customize-hook=printf \'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\\nAPT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\\nDir::Cache::pkgcache "";\\nDir::Cache::srcpkgcache "";\\n\' > "$1/etc/apt/apt.conf.d/docker-clean"',
  '--customize-hook=printf \'Acquire::Languages "none";\\n\' > "$1/etc/apt/apt.conf.d/docker-no-languages"',
  '--customize-hook=rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*.bin "$1/var/log/apt" "$1/var/log/dpkg.log"',
  'bookworm',
];

export interface Result {
  stdout: string;
  stderr: string;
  code: number | null;
}

function run(file: string, args: readonly string[], opts: { timeoutMs?: number; allowFail?: boolean; cwd?: string; input?: string } = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, {
      encoding: 'utf8', timeout: opts.timeoutMs ?? 60_000, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024,
      cwd: opts.cwd, env: { ...process.env, CONTAINERS_CONF },
    }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : null;
      if (code === 0 || opts.allowFail) return resolve({ stdout, stderr, code });
      reject(new Error(`${file} ${args.join(' ')} failed (${code ?? err?.message}): ${(stderr.trim() || stdout.trim()).slice(-4000)}`));
    });
    child.stdin?.on('error', () => {});
    child.stdin?.end(opts.input ?? '');
  });
}

export const podman = (args: readonly string[], opts: { timeoutMs?: number; allowFail?: boolean; cwd?: string } = {}): Promise<Result> => run('podman', args, opts);

const has = async (cmd: string): Promise<boolean> => (await run('sh', ['-c', `command -v ${cmd}`], { allowFail: true })).code === 0;

/** Why the image cannot be built and run here, or null when it can. */
export async function podmanUnavailable(): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'building and running the image needs root';
  const missing: string[] = [];
  for (const [cmd, pkg] of [['podman', 'podman'], ['runc', 'runc'], ['mmdebstrap', 'mmdebstrap'], ['ip', 'iproute2'], ['npm', 'npm']] as const) {
    if (!(await has(cmd))) missing.push(pkg);
  }
  return missing.length > 0 ? `not installed: ${missing.join(', ')} (.ci/run installs them with apt-get)` : null;
}

async function imageExists(ref: string): Promise<boolean> {
  return (await podman(['image', 'exists', ref], { allowFail: true })).code === 0;
}

/** The node binary the work tree pins (the `node` devDependency). */
function pinnedNode(): string {
  return join(ROOT, 'node_modules/node/bin/node');
}

/** The stand-ins' cache key: everything that goes into them. */
function standinKey(): string {
  const h = createHash('sha256');
  h.update(JSON.stringify(MMDEBSTRAP_ARGS)).update(JSON.stringify(BASE_TOOLS)).update(readFileSync(BASE_CONTAINERFILE));
  const node = statSync(pinnedNode());
  const pkg = JSON.parse(readFileSync(join(ROOT, 'node_modules/node/package.json'), 'utf8')) as { version: string };
  h.update(`${pkg.version} ${node.size}`);
  return h.digest('hex').slice(0, 16);
}

export interface Step {
  what: string;
  ms: number;
  cached: boolean;
}

/**
 * Makes sure docker.io/library/{debian:bookworm-slim,node:24-bookworm-slim} are the stand-ins
 * for this key, building them when podman's storage has no such key; removes stand-ins of
 * older keys.
 */
export async function ensureBases(log: (line: string) => void = () => {}): Promise<Step> {
  const started = performance.now();
  const key = standinKey();
  const debianTag = `${STANDIN_REPO}:debian-${key}`;
  const nodeTag = `${STANDIN_REPO}:node-${key}`;
  let cached = true;
  if (!(await imageExists(debianTag)) || !(await imageExists(nodeTag))) {
    cached = false;
    const dir = mkdtempSync(join(tmpdir(), 'podid-image-'));
    try {
      log(`building the base stand-ins (${key}): mmdebstrap bookworm minbase, then ${BASE_TOOLS.join(', ')}`);
      await run('mmdebstrap', [...MMDEBSTRAP_ARGS, join(dir, 'rootfs.tar')], { timeoutMs: 600_000 });
      await podman(['import', '--change', 'CMD ["bash"]', join(dir, 'rootfs.tar'), debianTag], { timeoutMs: 300_000 });
      rmSync(join(dir, 'rootfs.tar'));
      await podman(['tag', debianTag, DEBIAN]);
      const ctx = join(dir, 'ctx');
      mkdirSync(ctx);
      copyFileSync(pinnedNode(), join(ctx, 'node'));
      copyFileSync('/etc/ssl/certs/ca-certificates.crt', join(ctx, 'ca-certificates.crt'));
      for (const spec of BASE_TOOLS) {
        const name = spec.slice(0, spec.lastIndexOf('@'));
        const packed = (await run('npm', ['pack', '--silent', spec], { cwd: dir, timeoutMs: 300_000 })).stdout.trim().split('\n').at(-1)!;
        const into = join(ctx, name);
        mkdirSync(into);
        await run('tar', ['-xzf', join(dir, packed), '-C', into, '--strip-components=1']);
      }
      await podman(['build', '--pull=never', '--network', 'host', '-f', BASE_CONTAINERFILE, '-t', nodeTag, ctx], { timeoutMs: 600_000 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  await podman(['tag', debianTag, DEBIAN]);
  await podman(['tag', nodeTag, NODE]);
  // Stand-ins of older keys: untag them, so that their layers go with the next prune.
  const tags = (await podman(['images', '--format', '{{.Repository}}:{{.Tag}}', STANDIN_REPO])).stdout.split('\n').filter((t) => t !== '');
  for (const tag of tags) if (tag.startsWith(`${STANDIN_REPO}:`) && !tag.endsWith(`-${key}`)) await podman(['untag', tag], { allowFail: true });
  return { what: `base stand-ins ${key}`, ms: performance.now() - started, cached };
}

/** Builds the Dockerfile as it is (build stage tagged too, so its npm ci layer stays cached). */
export async function buildImage(log: (line: string) => void = () => {}): Promise<Step & { image: string; output: string }> {
  const started = performance.now();
  const common = ['build', '--pull=never', '--network', 'host', '--layers', '-f', join(ROOT, 'Dockerfile')];
  log('podman build --target build');
  const stage = await podman([...common, '--target', 'build', '-t', BUILD_STAGE, ROOT], { timeoutMs: 1_200_000 });
  log('podman build');
  const final = await podman([...common, '-t', IMAGE, ROOT], { timeoutMs: 1_200_000 });
  const output = stage.stdout + final.stdout;
  // Cached only when podman reused every RUN and COPY of both builds: it prints "Using cache"
  // on the line after each step it reused.
  const lines = output.split('\n');
  const steps = lines.flatMap((l, i) => (/^(?:\[\d+\/\d+\] )?STEP \d+\/\d+: (RUN|COPY)/.test(l) ? [i] : []));
  const reused = steps.filter((i) => lines[i + 1]?.startsWith('--> Using cache')).length;
  // Untagged leftovers of earlier builds (their stages, superseded layers): bounded, not growing.
  await podman(['image', 'prune', '-f'], { allowFail: true, timeoutMs: 300_000 });
  return { what: 'podman build', ms: performance.now() - started, cached: steps.length > 0 && reused === steps.length, image: IMAGE, output };
}

/** The image's size in bytes, as `podman image inspect` reports it. */
export async function imageSize(ref = IMAGE): Promise<number> {
  return Number((await podman(['image', 'inspect', '--format', '{{.Size}}', ref])).stdout.trim());
}

/** Removes containers named `names` (started with --rm, but a killed test may have left them). */
export async function removeContainers(names: readonly string[]): Promise<void> {
  for (const name of names) await podman(['rm', '-f', '--time', '0', name], { allowFail: true, timeoutMs: 60_000 });
}

/**
 * podman's cgroupfs manager creates `<parent>/libpod-<id>` and `<parent>/conmon` in every
 * cgroup v1 hierarchy of a hybrid host, outside the v2 tree TestCgroups removes: remove them
 * (deepest first) under `subtree`, which must be a test's own podid-test-* subtree.
 */
export function removeV1Cgroups(subtree: string): void {
  if (!/^podid-test-[0-9a-f]+$/.test(subtree)) throw new Error(`not a test cgroup subtree: ${subtree}`);
  for (const hierarchy of readdirSync('/sys/fs/cgroup', { withFileTypes: true })) {
    if (!hierarchy.isDirectory()) continue;
    const top = join('/sys/fs/cgroup', hierarchy.name, subtree);
    if (!existsSync(top)) continue;
    removeTree(top);
  }
}

/** rmdir a cgroup directory and its children, deepest first; busy ones stay. */
function removeTree(top: string): void {
  const dirs: string[] = [];
  const walk = (dir: string): void => {
    dirs.push(dir);
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) walk(join(dir, e.name));
  };
  walk(top);
  for (const dir of dirs.reverse()) { try { rmdirSync(dir); } catch { /* busy: in use */ } }
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === 'build') {
  const base = await ensureBases((l) => console.log(l));
  console.log(`${base.what}: ${(base.ms / 1000).toFixed(1)} s${base.cached ? ' (cached)' : ''}`);
  const built = await buildImage((l) => console.log(l));
  console.log(`${built.image}: ${(built.ms / 1000).toFixed(1)} s${built.cached ? ' (all steps cached)' : ''}, ${(await imageSize() / 1e6).toFixed(1)} MB`);
}

/** podman's default cgroup parent (cgroupfs manager) for runs without --cgroup-parent: removed once empty. */
export function removeLibpodParent(): void {
  for (const hierarchy of readdirSync('/sys/fs/cgroup', { withFileTypes: true })) {
    const top = join('/sys/fs/cgroup', hierarchy.name, 'libpod_parent');
    if (hierarchy.isDirectory() && existsSync(top)) removeTree(top);
  }
}
