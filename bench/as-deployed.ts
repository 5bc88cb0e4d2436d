// The daemon's command line as the image and the DaemonSet start it, read from the Dockerfile
// (final stage: ENV and ENTRYPOINT) and daemonset/daemonset.yaml (the nmi container's args and
// env), so that benchmarks measure what is deployed, runtime flags included. Only what cannot
// run on a developer machine is overridden, by flag name, and the caller says what.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface DeployedCommand {
  /** Node's own options from the ENTRYPOINT (V8 flags and the like), before the script. */
  nodeArgs: string[];
  /** The script, mapped from the image's /app to this checkout. */
  script: string;
  /** The nmi container's args. */
  args: string[];
  /** ENV of the image's final stage, then the container's literal env values. */
  env: Record<string, string>;
  /** Container env vars filled by the downward API (NODE_NAME, HOST_IP): the caller sets them. */
  downwardEnv: string[];
}

function dockerfile(): { env: Record<string, string>; entrypoint: string[] } {
  const text = readFileSync(`${ROOT}Dockerfile`, 'utf8').replace(/\\\n/g, ' ');
  const lines = text.split('\n');
  const lastFrom = lines.findLastIndex((l) => /^FROM\s/i.test(l));
  const env: Record<string, string> = {};
  let entrypoint: string[] | undefined;
  for (const line of lines.slice(lastFrom)) {
    const m = /^(ENV|ENTRYPOINT)\s+(.*)$/i.exec(line.trim());
    if (m === null) continue;
    if (m[1]!.toUpperCase() === 'ENTRYPOINT') entrypoint = JSON.parse(m[2]!) as string[];
    else for (const pair of m[2]!.trim().split(/\s+/)) {
      const eq = pair.indexOf('=');
      if (eq <= 0) throw new Error(`Dockerfile: ENV ${pair}: only KEY=VALUE is read here`);
      env[pair.slice(0, eq)] = pair.slice(eq + 1).replace(/^"(.*)"$/, '$1');
    }
  }
  if (entrypoint === undefined || entrypoint[0] !== 'node') throw new Error('Dockerfile: no exec-form ENTRYPOINT starting with node');
  return { env, entrypoint };
}

interface Container {
  name: string;
  args?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: unknown }>;
}

/** The DaemonSet's pod template spec, as daemonset/daemonset.yaml has it now (test/image reads it too). */
export function daemonSetPodSpec(): { containers: Container[] } & Record<string, unknown> {
  const docs = parseAllDocuments(readFileSync(`${ROOT}daemonset/daemonset.yaml`, 'utf8')).map((d) => d.toJS() as Record<string, unknown>);
  const ds = docs.find((d) => d.kind === 'DaemonSet') as { spec: { template: { spec: { containers: Container[] } & Record<string, unknown> } } } | undefined;
  if (ds === undefined) throw new Error('daemonset.yaml: no DaemonSet');
  return ds.spec.template.spec;
}

function daemonSetContainer(): Container {
  const container = daemonSetPodSpec().containers.find((c) => c.name === 'nmi');
  if (container === undefined) throw new Error('daemonset.yaml: no DaemonSet with an nmi container');
  return container;
}

export function deployedCommand(): DeployedCommand {
  const { env, entrypoint } = dockerfile();
  const scriptAt = entrypoint.findIndex((a, i) => i > 0 && !a.startsWith('-'));
  if (scriptAt === -1) throw new Error('Dockerfile: ENTRYPOINT names no script');
  const container = daemonSetContainer();
  const downwardEnv: string[] = [];
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else downwardEnv.push(e.name);
  }
  return {
    nodeArgs: entrypoint.slice(1, scriptAt),
    script: entrypoint[scriptAt]!.replace(/^\/app\//, ROOT),
    args: entrypoint.slice(scriptAt + 1).concat(container.args ?? []),
    env,
    downwardEnv,
  };
}

/** `args` with `$(VAR)` expanded from `env` and the named flags' values replaced (or added). */
export function withFlags(args: readonly string[], env: Record<string, string>, overrides: Record<string, string>): string[] {
  const seen = new Set<string>();
  const out = args.map((arg) => {
    const expanded = arg.replace(/\$\(([A-Z_][A-Z0-9_]*)\)/g, (_, name: string) => env[name] ?? '');
    const name = /^--?([^=]+)/.exec(expanded)?.[1];
    if (name === undefined || !(name in overrides)) return expanded;
    seen.add(name);
    return `--${name}=${overrides[name]}`;
  });
  for (const [name, value] of Object.entries(overrides)) if (!seen.has(name)) out.push(`--${name}=${value}`);
  return out;
}
