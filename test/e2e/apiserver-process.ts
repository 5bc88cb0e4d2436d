// The fake Kubernetes API server as a process, for the end-to-end test: it runs inside the
// node's network namespace (on that namespace's 127.0.0.1), where the test process cannot
// connect, so the test drives it through JSON lines:
//   stdin:  {"id":1,"op":"create"|"update","resource":"pods","object":{...}}
//           {"id":2,"op":"delete","resource":"pods","namespace":"default","name":"a"}
//           {"id":3,"op":"watchCount"}   {"op":"get","resource":"nodes","namespace":"default","name":"n"}
//           {"id":4,"op":"failNext","count":3,"resource":"azureidentitybindings","watch":false,"status":500}
//   stdout: {"event":"ready","url":"http://127.0.0.1:PORT","kubeconfig":"FILE","dir":"its temp dir"} once, then
//           {"id":1,"ok":true,...} or {"id":1,"ok":false,"error":"..."} per command.
// Usage: node apiserver-process.ts --kubeconfig-out FILE
// It stops when stdin closes, or on SIGTERM/SIGINT.
import { copyFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { FakeApiServer } from '../fake-apiserver/fake-apiserver.ts';
import type { Obj, ResourceName } from '../fake-apiserver/fake-apiserver.ts';
import { print, serveCommands } from './command-loop.ts';

const RESOURCES: readonly ResourceName[] = ['pods', 'nodes', 'secrets', 'serviceaccounts', 'azureidentities', 'azureidentitybindings', 'azurepodidentityexceptions', 'azureassignedidentities'];

function resourceOf(value: unknown): ResourceName {
  if (typeof value !== 'string' || !(RESOURCES as readonly string[]).includes(value)) throw new Error(`unknown resource ${JSON.stringify(value)}`);
  return value as ResourceName;
}

function stringOf(value: unknown, what: string): string {
  if (typeof value !== 'string' || value === '') throw new Error(`${what} must be a non-empty string`);
  return value;
}

const outIndex = process.argv.indexOf('--kubeconfig-out');
const kubeconfigOut = outIndex === -1 ? undefined : process.argv[outIndex + 1];
if (kubeconfigOut === undefined) {
  process.stderr.write('usage: apiserver-process.ts --kubeconfig-out FILE\n');
  process.exit(2);
}

const api = await FakeApiServer.start();
const ownKubeconfig = api.kubeconfig();
copyFileSync(ownKubeconfig, kubeconfigOut);

serveCommands((cmd) => {
  switch (cmd.op) {
    case 'create':
      return { object: api.create(resourceOf(cmd.resource), cmd.object as Obj) };
    case 'update':
      return { object: api.update(resourceOf(cmd.resource), cmd.object as Obj) };
    case 'get':
      return { object: api.store.get(resourceOf(cmd.resource), stringOf(cmd.namespace, 'namespace'), stringOf(cmd.name, 'name')) ?? null };
    case 'delete':
      return { object: api.delete(resourceOf(cmd.resource), stringOf(cmd.namespace, 'namespace'), stringOf(cmd.name, 'name')) ?? null };
    case 'failNext': {
      // The next `count` matching requests get `status` (default 500), as a struggling API server.
      const count = Number(cmd.count);
      if (!Number.isInteger(count) || count < 1) throw new Error('count must be a positive integer');
      api.failNext(count, {
        ...(cmd.resource !== undefined ? { resource: resourceOf(cmd.resource) } : {}),
        ...(typeof cmd.watch === 'boolean' ? { watch: cmd.watch } : {}),
        ...(typeof cmd.status === 'number' ? { status: cmd.status } : {}),
      });
      return {};
    }
    case 'tokenRequests':
      return { value: api.tokenRequests };
    case 'watchCount':
      return { value: api.watchCount() };
    case 'events':
      return { value: [...api.events.values()] };
    default:
      throw new Error(`unknown op ${JSON.stringify(cmd.op)}`);
  }
}, () => api.close());

// The service-account issuer and its JWKS, for a fake Entra ID to trust (workload identity federation).
print({ event: 'ready', url: api.url, kubeconfig: kubeconfigOut, dir: dirname(ownKubeconfig), issuer: api.issuer, jwks: api.jwks() });
