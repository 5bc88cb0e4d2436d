// A pod's DefaultAzureCredential: getToken('https://vault.azure.net/.default') with whatever
// chain the SDK builds from a clean environment (managed identity through 169.254.169.254).
// Usage: node default-azure-credential.ts [--scope S] [--timeout-ms N]
import { DefaultAzureCredential } from '@azure/identity';
import { option, runClient, timeoutOption } from './result.ts';

const scope = option('--scope') ?? 'https://vault.azure.net/.default';
await runClient(async () => {
  const token = await new DefaultAzureCredential().getToken(scope);
  return { token: token.token };
}, timeoutOption());
