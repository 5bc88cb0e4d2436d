// `podman run` options that start the image as daemonset/daemonset.yaml starts it: read from
// the manifest each time (network, securityContext, env, args, volume mounts, limits), so that
// a manifest change reaches the image test without editing it. What a kubelet would do that
// podman has no word for is mapped here, and a manifest field this file does not know fails
// loudly instead of being dropped.
import { mkdirSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { daemonSetPodSpec, withFlags } from '../../bench/as-deployed.ts';

export interface Probe {
  httpGet?: { path?: string; port: number | string };
  exec?: { command: string[] };
}

interface Volume {
  name: string;
  [source: string]: unknown;
  hostPath?: { path: string; type?: string };
  emptyDir?: { medium?: string; sizeLimit?: string };
}

interface Container {
  name: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }>;
  ports?: Array<{ name?: string; containerPort: number }>;
  securityContext?: {
    privileged?: boolean; readOnlyRootFilesystem?: boolean; runAsUser?: number; runAsGroup?: number;
    capabilities?: { add?: string[]; drop?: string[] };
  };
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
  resources?: { limits?: { memory?: string; cpu?: string } };
  readinessProbe?: Probe;
  livenessProbe?: Probe;
}

export interface PodSpec {
  hostNetwork?: boolean;
  hostPID?: boolean;
  containers: Container[];
  volumes?: Volume[];
}

export interface RunContext {
  /** Container name (removed by the test afterwards). */
  name: string;
  /** The network namespace playing the node (hostNetwork). */
  netns: string;
  /** Values of the downward API's fields, by fieldPath (spec.nodeName, status.hostIP, ...). */
  fields: Record<string, string>;
  /** Flags replaced or added after $(VAR) expansion, by name, and why (the caller says). */
  overrides: Record<string, string>;
  /** Where emptyDir volumes live for this run (a kubelet keeps them under /var/lib/kubelet). */
  scratch: string;
  /** Extra bind mounts the node would provide (kubeconfig, the hybrid host's cgroup2 tree). */
  mounts: Array<{ host: string; path: string; readOnly?: boolean }>;
  /** The pod's cgroup, absolute in the hierarchy: the container's cgroup is created under it. */
  cgroupParent?: string;
  /** Filled with what could only be approximated (volumes of cluster-provided contents). */
  notes?: string[];
}

export function nmiContainer(spec: PodSpec = daemonSetPodSpec() as PodSpec): Container {
  const c = spec.containers.find((x) => x.name === 'nmi');
  if (c === undefined) throw new Error('daemonset.yaml: no nmi container');
  return c;
}

/** Kubernetes quantities as podman takes them: 320Mi -> 320m, 1 -> 1, 500m (cpu) -> 0.5. */
const memory = (q: string): string => {
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(q);
  if (m === null) throw new Error(`memory limit ${q}: only Ki, Mi, Gi are read here`);
  return `${m[1]}${({ Ki: 'k', Mi: 'm', Gi: 'g' } as Record<string, string>)[m[2] ?? ''] ?? 'b'}`;
};
const cpus = (q: string): string => (q.endsWith('m') ? String(Number(q.slice(0, -1)) / 1000) : q);

/** `podman run` argv (without the image) and the container's args, for the nmi container. */
export function podmanRunArgs(ctx: RunContext, image: string): string[] {
  const spec = daemonSetPodSpec() as PodSpec;
  const c = nmiContainer(spec);
  if (spec.hostNetwork !== true) throw new Error('daemonset.yaml: the image test plays a hostNetwork pod; hostNetwork is not true');
  const out = ['run', '--rm', '--name', ctx.name, '--network', `ns:/var/run/netns/${ctx.netns}`, '--pull=never'];
  // --attest-pod-sockets reads pod cgroups' cgroup.procs, which number processes in the node's PID namespace.
  if (spec.hostPID === true) out.push('--pid=host');
  const sc = c.securityContext ?? {};
  if (sc.privileged === true) {
    // containerd and CRI-O give a privileged container the node's cgroup namespace.
    out.push('--privileged', '--cgroupns=host');
  } else {
    out.push('--cap-drop=all');
    for (const cap of sc.capabilities?.add ?? []) out.push(`--cap-add=${cap}`);
  }
  // podman's --read-only would add tmpfs mounts of its own on /tmp, /var/tmp and /run; a kubelet does not.
  if (sc.readOnlyRootFilesystem === true) out.push('--read-only', '--read-only-tmpfs=false');
  if (sc.runAsUser !== undefined) out.push('--user', `${sc.runAsUser}${sc.runAsGroup !== undefined ? `:${sc.runAsGroup}` : ''}`);
  if (c.resources?.limits?.memory !== undefined) out.push('--memory', memory(c.resources.limits.memory));
  if (c.resources?.limits?.cpu !== undefined) out.push('--cpus', cpus(c.resources.limits.cpu));
  if (ctx.cgroupParent !== undefined) out.push('--cgroup-parent', ctx.cgroupParent);

  const env: Record<string, string> = {};
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef !== undefined) {
      const v = ctx.fields[e.valueFrom.fieldRef.fieldPath];
      if (v === undefined) throw new Error(`daemonset.yaml: env ${e.name} from ${e.valueFrom.fieldRef.fieldPath}: the image test has no value for it`);
      env[e.name] = v;
    } else throw new Error(`daemonset.yaml: env ${e.name}: only value and fieldRef are read here`);
  }
  for (const [k, v] of Object.entries(env)) out.push('--env', `${k}=${v}`);

  const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
  for (const m of c.volumeMounts ?? []) {
    const v = volumes.get(m.name);
    if (v === undefined) throw new Error(`daemonset.yaml: volumeMount ${m.name} has no volume`);
    const ro = m.readOnly === true ? ':ro' : '';
    if (v.hostPath !== undefined) {
      // The node is this machine: the same path, created as the type says.
      const { path, type = '' } = v.hostPath;
      if (type === 'FileOrCreate' && !existsSync(path)) writeFileSync(path, '', { flag: 'a' });
      if (type === 'DirectoryOrCreate') mkdirSync(path, { recursive: true });
      if (!existsSync(path)) throw new Error(`daemonset.yaml: hostPath ${path} (${type || 'no type'}) does not exist on this machine`);
      out.push('--volume', `${path}:${m.mountPath}${ro}`);
    } else if (v.emptyDir !== undefined) {
      if (v.emptyDir.medium === 'Memory') out.push('--tmpfs', `${m.mountPath}${v.emptyDir.sizeLimit !== undefined ? `:size=${memory(v.emptyDir.sizeLimit)}` : ''}`);
      else {
        const dir = join(ctx.scratch, `emptydir-${m.name}`);
        mkdirSync(dir, { recursive: true });
        out.push('--volume', `${dir}:${m.mountPath}${ro}`);
      }
    } else if (['configMap', 'secret', 'projected', 'downwardAPI'].some((k) => k in v)) {
      // Cluster-provided contents this test has none of: an empty read-only directory, said aloud.
      const dir = join(ctx.scratch, `volume-${m.name}`);
      mkdirSync(dir, { recursive: true });
      ctx.notes?.push(`volume ${m.name} (${Object.keys(v).filter((k) => k !== 'name').join(', ')}) mounted empty at ${m.mountPath}`);
      out.push('--volume', `${dir}:${m.mountPath}:ro`);
    } else throw new Error(`daemonset.yaml: volume ${m.name}: only hostPath, emptyDir, configMap, secret, projected and downwardAPI are mapped here`);
  }
  for (const m of ctx.mounts) out.push('--volume', `${m.host}:${m.path}${m.readOnly === true ? ':ro' : ''}`);
  if (c.command !== undefined) out.push('--entrypoint', JSON.stringify(c.command));

  const args = withFlags(c.args ?? [], env, ctx.overrides);
  return [...out, image, ...args];
}

/** The container's port number for a probe's port (a number or a named containerPort). */
export function probePort(port: number | string, c: Container = nmiContainer()): number {
  if (typeof port === 'number') return port;
  const found = c.ports?.find((p) => p.name === port);
  if (found === undefined) throw new Error(`daemonset.yaml: probe port ${port} names no containerPort`);
  return found.containerPort;
}
