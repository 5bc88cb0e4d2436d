// aad-pod-identity NMI v1.8.17's flags that mean nothing here (cmd/nmi/main.go, klog v2.30.0's
// InitFlags, the old chart's --host-ip). Manifests and charts pass them, so they are accepted
// with NMI's syntax and named in one warning at start, each with the reason it has no effect.
import type { FlagType } from './flags.ts';

export interface IgnoredFlag {
  readonly type: FlagType;
  readonly why: string;
}

const KLOG = 'klog output option; logs go to stdout through pino (--log-format, --log-level, -v)';

export const IGNORED_FLAGS: ReadonlyMap<string, IgnoredFlag> = new Map<string, IgnoredFlag>([
  ['enableScaleFeatures', { type: 'bool', why: 'the informers always watch only this node\'s objects' }],
  ['MICNamespace', {
    type: 'string',
    why: 'MIC\'s pods pass through by the `mic` AzurePodIdentityException that the chart and manifests install, '
      + 'not by namespace and a ReplicaSet-name prefix, which any pod could take',
  }],
  ['enableProfile', { type: 'bool', why: 'no pprof is ever served' }],
  ['kubelet-config', { type: 'string', why: 'no kubenet check is made' }],
  ['allow-network-plugin-kubenet', {
    type: 'bool',
    why: 'no kubenet check is made: the pod IP spoofing it guarded against is closed by --attest-pod-sockets (docs/attestation.md)',
  }],
  ['set-retry-after-header', { type: 'bool', why: 'transient answers always carry Retry-After' }],
  ['host-ip', { type: 'string', why: 'aad-pod-identity <= 1.6.1 option; the node\'s address is not needed' }],
  // klog v2.30.0 InitFlags, all but v (honoured).
  ['log_dir', { type: 'string', why: KLOG }],
  ['log_file', { type: 'string', why: KLOG }],
  ['log_file_max_size', { type: 'uint', why: KLOG }],
  ['logtostderr', { type: 'bool', why: KLOG }],
  ['alsologtostderr', { type: 'bool', why: KLOG }],
  ['add_dir_header', { type: 'bool', why: KLOG }],
  ['skip_headers', { type: 'bool', why: KLOG }],
  ['skip_log_headers', { type: 'bool', why: KLOG }],
  ['one_output', { type: 'bool', why: KLOG }],
  ['stderrthreshold', { type: 'string', why: KLOG }],
  ['vmodule', { type: 'string', why: KLOG }],
  ['log_backtrace_at', { type: 'string', why: KLOG }],
  // Accepted by earlier podid-nmi versions; not NMI flags (MIC's, component-base's).
  ['cloud-config', { type: 'string', why: 'a MIC option; the daemon reads no cloud config' }],
  ['log-flush-frequency', { type: 'string', why: 'logs are written as they happen' }],
]);

/** The one start-up warning naming every ignored flag that was given, each once, with why. */
export function ignoredFlagsWarning(names: readonly string[]): string | undefined {
  if (names.length === 0) return undefined;
  const parts = names.map((name) => `--${name} (${IGNORED_FLAGS.get(name)?.why ?? 'no effect here'})`);
  return `flags accepted for compatibility with aad-pod-identity NMI and ignored: ${parts.join('; ')}`;
}
