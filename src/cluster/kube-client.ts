// The two pieces of @kubernetes/client-node the daemon uses, loaded without the rest:
// KubeConfig (kubeconfig files, the in-cluster service account, and the exec, OIDC, Azure,
// GCP and client-certificate auth it applies) and RequestContext, which carries that auth
// onto a request. The package index loads every generated API model and client (about
// 85 MiB of RSS on Node 24). The package has no `exports` map, so its modules can be
// imported one by one, but dist/config.js itself imports the generated index (gen/index.js)
// for one method, makeApiClient, which the daemon never calls. A resolve hook hands that one
// importer a stub of the two names it takes from there; everything else resolves normally.
// Checked against client-node 2.0.x by test/kube-client.test.ts: if an update makes
// config.js import more from the index, the test fails (and the daemon would fail at start,
// naming the missing export), never a silent fallback.
import { registerHooks } from 'node:module';
import type { KubeConfig } from '@kubernetes/client-node';

export { HttpMethod, RequestContext } from '@kubernetes/client-node/dist/gen/http/http.js';

/** The names dist/config.js imports from ./gen/index.js (client-node 2.0.x), all used only by makeApiClient. */
export const GENERATED_INDEX_IMPORTS = ['createConfiguration', 'ServerConfiguration'] as const;

const STUB = `data:text/javascript,${encodeURIComponent(`
const unavailable = () => { throw new Error('podid-nmi loads no generated API clients (KubeConfig.makeApiClient is unavailable)'); };
export const createConfiguration = unavailable;
export class ServerConfiguration { constructor() { unavailable(); } }
`)}`;

const CONFIG_MODULE = '/@kubernetes/client-node/dist/config.js';

let hooked = false;

/** Whether `specifier`, imported by `parentURL`, is client-node's config.js reaching for the generated index. */
export function isGeneratedIndexImport(specifier: string, parentURL: string | undefined): boolean {
  return specifier === './gen/index.js' && parentURL !== undefined && parentURL.endsWith(CONFIG_MODULE);
}

function hookGeneratedIndex(): void {
  if (hooked) return;
  hooked = true;
  registerHooks({
    resolve(specifier, context, nextResolve) {
      if (isGeneratedIndexImport(specifier, context.parentURL)) return { url: STUB, shortCircuit: true };
      return nextResolve(specifier, context);
    },
  });
}

/**
 * The KubeConfig class, from a config.js loaded without the generated API index. If some
 * other module of the process imported config.js first (a test importing the package index),
 * this is that module, index and all: correct, only heavier.
 */
export async function kubeConfigClass(): Promise<typeof KubeConfig> {
  hookGeneratedIndex();
  const mod = await import('@kubernetes/client-node/dist/config.js');
  return mod.KubeConfig;
}
