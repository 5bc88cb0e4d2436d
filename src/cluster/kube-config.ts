// Where the daemon finds the API server: an explicit file, else $KUBECONFIG, else the
// in-cluster service account. Unlike the library's loadFromDefault there is no fallback to
// ~/.kube/config or http://localhost:8080: a DaemonSet picking up a stray config would be
// worse than failing at start.
import type { KubeConfig } from '@kubernetes/client-node';
import { kubeConfigClass } from './kube-client.ts';

export class KubeConfigError extends Error {
  override name = 'KubeConfigError';
}

export async function loadKubeConfig(file?: string): Promise<KubeConfig> {
  const kc = new (await kubeConfigClass())();
  const fromEnv = process.env.KUBECONFIG ?? '';
  try {
    if (file !== undefined && file !== '') kc.loadFromFile(file);
    else if (fromEnv !== '') kc.loadFromDefault(); // reads (and merges) $KUBECONFIG first
    else if (process.env.KUBERNETES_SERVICE_HOST !== undefined) kc.loadFromCluster();
    else throw new KubeConfigError('no kubeconfig given, KUBECONFIG unset, and not in a cluster (KUBERNETES_SERVICE_HOST unset)');
  } catch (err) {
    if (err instanceof KubeConfigError) throw err;
    throw new KubeConfigError(`cannot load kubeconfig ${file || fromEnv || '(in-cluster)'}: ${(err as Error).message}`);
  }
  const cluster = kc.getCurrentCluster();
  if (cluster === null) throw new KubeConfigError('kubeconfig has no current cluster');
  if (cluster.server.startsWith('http:') && cluster.skipTLSVerify !== true) {
    // The client would refuse it on every request; say so once, at start.
    throw new KubeConfigError(`plain-HTTP API server ${cluster.server} needs insecure-skip-tls-verify (test setups only)`);
  }
  return kc;
}
