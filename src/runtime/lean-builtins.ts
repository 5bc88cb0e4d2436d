// Node 24's ESM facade of node:http reads every export of the module, and three of them
// (WebSocket, CloseEvent, MessageEvent) are getters that load Node's bundled undici, a 750 KB
// script, the first time they are read (nodejs/node#59686). One `import … from 'node:http'`
// anywhere (ours, client-node's config.js, agent-base's) thus costs about 14 MiB of RSS and
// 2 MiB of heap, for a WebSocket client the daemon never uses. `require('node:http')` does not
// read them. A resolve hook hands every ES module that imports node:http a facade of the module
// as require gives it, without those three; CommonJS requires are left alone.
// Registered by the daemon's entry (cli.ts) before the daemon's modules are linked;
// test/loaded-modules.test.ts checks that the bundled undici stays unloaded.
import { registerHooks } from 'node:module';

/** node:http's exports that load Node's bundled undici when read. */
export const LAZY_WEB_EXPORTS: ReadonlySet<string> = new Set(['WebSocket', 'CloseEvent', 'MessageEvent']);

/** The facade: node:http as require gives it, with a named export for every property but the three. */
export function httpFacadeSource(): string {
  const names = Object.keys(process.getBuiltinModule('node:http')).filter((n) => !LAZY_WEB_EXPORTS.has(n) && /^[A-Za-z_$][\w$]*$/.test(n));
  return [
    "const http = process.getBuiltinModule('node:http');",
    'export default http;',
    ...names.map((n) => `export const ${n} = http.${n};`),
  ].join('\n');
}

let registered = false;

export function registerLeanBuiltins(): void {
  if (registered) return;
  registered = true;
  const url = `data:text/javascript,${encodeURIComponent(httpFacadeSource())}`;
  registerHooks({
    resolve(specifier, context, nextResolve) {
      const isHttp = specifier === 'node:http' || specifier === 'http';
      if (isHttp && !context.conditions.includes('require')) return { url, format: 'module', shortCircuit: true };
      return nextResolve(specifier, context);
    },
  });
}
