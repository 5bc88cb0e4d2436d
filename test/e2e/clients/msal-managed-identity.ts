// A pod using @azure/msal-node directly: ManagedIdentityApplication, system-assigned form or
// with userAssignedClientId, acquireToken({ resource }).
// Usage: node msal-managed-identity.ts [--client-id ID] [--resource R] [--timeout-ms N]
import { ManagedIdentityApplication } from '@azure/msal-node';
import { option, runClient, timeoutOption } from './result.ts';

const resource = option('--resource') ?? 'https://vault.azure.net';
const clientId = option('--client-id');
await runClient(async () => {
  const app = clientId !== undefined
    ? new ManagedIdentityApplication({ managedIdentityIdParams: { userAssignedClientId: clientId } })
    : new ManagedIdentityApplication();
  const result = await app.acquireToken({ resource });
  return { token: result.accessToken };
}, timeoutOption());
