// Connections a pod opened to the metadata address before the DNAT existed keep their
// conntrack entry and bypass the new rule until they close; deleting the entries makes the
// next packet go through the nat table again.
import type { CommandRunner } from './run-command.ts';

/** Returns the number of entries deleted (conntrack exits 1 when there were none). */
export async function flushMetadataConntrack(run: CommandRunner, metadataIp: string, metadataPort: number): Promise<number> {
  const { stderr } = await run('conntrack', ['-D', '-d', metadataIp, '-p', 'tcp', '--dport', String(metadataPort)], { okCodes: [1] });
  const match = /(\d+) flow entries have been deleted/.exec(stderr);
  return match ? Number(match[1]) : 0;
}
