// Kubelet's cgroup names, read back to the pod they belong to. Both drivers, every QoS class:
//   systemd:  kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid, _ for ->.slice/<ctr>.scope
//             kubepods.slice/kubepods-pod<uid>.slice/…                       (guaranteed)
//   cgroupfs: kubepods/<qos>/pod<uid>/<ctr>,  kubepods/pod<uid>/<ctr>       (guaranteed)
// The match is anchored at the kubepods root and stops at the first pod segment: a pod that
// creates cgroups below its own (systemd in a container) cannot make a deeper segment that
// names another pod count, because only the segment right under kubepods (or its QoS level)
// is read.

export type CgroupDriver = 'systemd' | 'cgroupfs';

export interface PodCgroup {
  readonly uid: string;
  readonly driver: CgroupDriver;
  /** The pod-level cgroup, relative to the hierarchy root without a leading slash. */
  readonly podPath: string;
}

const QOS = new Set(['burstable', 'besteffort']);
const UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The kubepods roots kubelet may use, under `parent` ('' or e.g. 'kubelet'), without slashes. */
export function kubepodsRoots(parent: string): { systemd: string; cgroupfs: string } {
  const p = trimSlashes(parent);
  const join = (name: string): string => (p === '' ? name : `${p}/${name}`);
  return { systemd: join('kubepods.slice'), cgroupfs: join('kubepods') };
}

/**
 * The pod a cgroup path (as /proc/PID/cgroup or `ss --cgroup` print it) belongs to, or
 * undefined when it is not inside a pod cgroup of kubelet under `parent`.
 */
export function podCgroupOf(path: string, parent = ''): PodCgroup | undefined {
  const p = trimSlashes(parent);
  let rest = trimSlashes(path);
  if (p !== '') {
    if (!rest.startsWith(`${p}/`)) return undefined;
    rest = rest.slice(p.length + 1);
  }
  const segs = rest.split('/');
  const prefix = p === '' ? '' : `${p}/`;
  if (segs[0] === 'kubepods.slice') return systemd(segs, prefix);
  if (segs[0] === 'kubepods') return cgroupfs(segs, prefix);
  return undefined;
}

function systemd(segs: string[], prefix: string): PodCgroup | undefined {
  const level1 = segs[1];
  if (level1 === undefined) return undefined;
  // kubepods-pod<uid>.slice (guaranteed) or kubepods-<qos>.slice/kubepods-<qos>-pod<uid>.slice
  let uid = sliceUid(level1, 'kubepods-pod');
  let depth = 2;
  if (uid === undefined) {
    const qos = /^kubepods-([a-z]+)\.slice$/.exec(level1)?.[1];
    if (qos === undefined || !QOS.has(qos) || segs[2] === undefined) return undefined;
    uid = sliceUid(segs[2], `kubepods-${qos}-pod`);
    depth = 3;
  }
  if (uid === undefined) return undefined;
  return { uid, driver: 'systemd', podPath: prefix + segs.slice(0, depth).join('/') };
}

function sliceUid(seg: string, head: string): string | undefined {
  if (!seg.startsWith(head) || !seg.endsWith('.slice')) return undefined;
  // systemd reserves '-' as the slice separator, so kubelet writes the UID's dashes as '_';
  // a name with '-' there is not one kubelet made.
  const raw = seg.slice(head.length, -'.slice'.length);
  if (raw.includes('-')) return undefined;
  const uid = raw.replaceAll('_', '-');
  return UID.test(uid) ? uid : undefined;
}

function cgroupfs(segs: string[], prefix: string): PodCgroup | undefined {
  let depth = 2;
  let seg = segs[1];
  if (seg !== undefined && QOS.has(seg)) {
    seg = segs[2];
    depth = 3;
  }
  if (seg === undefined || !seg.startsWith('pod')) return undefined;
  const uid = seg.slice(3);
  if (!UID.test(uid)) return undefined;
  return { uid, driver: 'cgroupfs', podPath: prefix + segs.slice(0, depth).join('/') };
}

function trimSlashes(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && s.charCodeAt(a) === 0x2f) a++;
  while (b > a && s.charCodeAt(b - 1) === 0x2f) b--;
  return s.slice(a, b);
}

/**
 * Where kubelet puts the pod cgroup of `uid` under `parent`, relative to the hierarchy root:
 * every driver and QoS class, since the pod's class is not known here. Empty for a UID that
 * is not one (nothing from the API server is joined into a path unchecked).
 */
export function podCgroupPaths(uid: string, parent = ''): string[] {
  if (!UID.test(uid)) return [];
  const { systemd: s, cgroupfs: c } = kubepodsRoots(parent);
  const u = uid.replaceAll('-', '_');
  return [
    `${s}/kubepods-burstable.slice/kubepods-burstable-pod${u}.slice`,
    `${s}/kubepods-besteffort.slice/kubepods-besteffort-pod${u}.slice`,
    `${s}/kubepods-pod${u}.slice`,
    `${c}/burstable/pod${uid}`,
    `${c}/besteffort/pod${uid}`,
    `${c}/pod${uid}`,
  ];
}
