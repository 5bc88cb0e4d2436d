// DNAT from PREROUTING to 127.0.0.1 only works with net.ipv4.conf.all.route_localnet=1:
// otherwise the kernel drops the rewritten packets as martians. kube-proxy in iptables mode
// sets it on most nodes; we set it when it is not, and say loudly when we cannot (an
// unprivileged container sees /proc/sys read-only).
import { readFile, writeFile } from 'node:fs/promises';
import type { CommandRunner } from './run-command.ts';

const KEY = 'net.ipv4.conf.all.route_localnet';
const PROC_PATH = '/proc/sys/net/ipv4/conf/all/route_localnet';

export interface SysctlAccess {
  read(): Promise<string>;
  enable(): Promise<void>;
  /** Only cleanup-iptables, and only when the daemon turned it on. */
  disable(): Promise<void>;
}

/** Through the command prefix, so a test's `ip netns exec` reaches its namespace's value. */
export function sysctlViaCommand(run: CommandRunner): SysctlAccess {
  return {
    read: async () => (await run('sysctl', ['-n', KEY])).stdout.trim(),
    enable: async () => { await run('sysctl', ['-w', `${KEY}=1`]); },
    disable: async () => { await run('sysctl', ['-w', `${KEY}=0`]); },
  };
}

/** Direct /proc access: /proc/sys/net shows the network namespace of the daemon itself. */
export function sysctlViaProc(path = PROC_PATH): SysctlAccess {
  return {
    read: async () => (await readFile(path, 'utf8')).trim(),
    enable: async () => { await writeFile(path, '1\n'); },
    disable: async () => { await writeFile(path, '0\n'); },
  };
}

export async function ensureRouteLocalnet(access: Pick<SysctlAccess, 'read' | 'enable'>): Promise<'already' | 'set'> {
  if ((await access.read()) === '1') return 'already';
  await access.enable();
  const after = await access.read();
  if (after !== '1') throw new Error(`${KEY} is still ${after} after writing 1`);
  return 'set';
}

export const ROUTE_LOCALNET_HELP = `${KEY}=0 and it could not be set: packets DNATed to the loopback listener are ` +
  'dropped as martians, so pods cannot reach the metadata endpoint at all (fail closed). ' +
  `Set ${KEY}=1 on the node (kube-proxy in iptables mode does), or give the container a writable /proc/sys.`;
