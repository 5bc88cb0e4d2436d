// A pod's ManagedIdentityCredential, system-assigned form or with a clientId / resourceId.
// Usage: node managed-identity-credential.ts [--client-id ID | --resource-id ARM_ID] [--scope S] [--timeout-ms N]
import { ManagedIdentityCredential } from '@azure/identity';
import { option, runClient, timeoutOption } from './result.ts';

const scope = option('--scope') ?? 'https://vault.azure.net/.default';
const clientId = option('--client-id');
const resourceId = option('--resource-id');
await runClient(async () => {
  const credential = clientId !== undefined
    ? new ManagedIdentityCredential({ clientId })
    : resourceId !== undefined
      ? new ManagedIdentityCredential({ resourceId })
      : new ManagedIdentityCredential();
  const token = await credential.getToken(scope);
  return { token: token.token };
}, timeoutOption());
