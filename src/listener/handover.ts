// A rolling update starts the next daemon beside this one, on the same ports (SO_REUSEPORT).
// What the hand-over needs from the node: whether another daemon already listens on the port
// (then the new one joins only once it can answer), and that the kernel moves connections
// queued on a closing listener to the one that stays instead of resetting them.
import { readFile, writeFile } from 'node:fs/promises';

/** LISTEN in /proc/net/tcp's `st` column. */
const LISTEN = '0A';

/** The ports in LISTEN state in a /proc/net/tcp (or tcp6) listing. */
export function listeningPorts(listing: string): Set<number> {
  const ports = new Set<number>();
  for (const line of listing.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields[3] !== LISTEN) continue;
    const local = fields[1] ?? '';
    const port = Number.parseInt(local.slice(local.lastIndexOf(':') + 1), 16);
    if (Number.isInteger(port)) ports.add(port);
  }
  return ports;
}

/**
 * Whether something in this network namespace listens on TCP `port`, read from /proc (no
 * packet sent). Any address counts: a daemon on 127.0.0.1 and one on the wildcard share DNATed
 * traffic all the same. Unreadable files count as nobody listening (the old behaviour).
 */
export async function portHasListener(port: number, files = ['/proc/net/tcp', '/proc/net/tcp6']): Promise<boolean> {
  for (const file of files) {
    const listing = await readFile(file, 'utf8').catch(() => '');
    if (listeningPorts(listing).has(port)) return true;
  }
  return false;
}

const MIGRATE_KEY = 'net.ipv4.tcp_migrate_req';
const MIGRATE_PATH = '/proc/sys/net/ipv4/tcp_migrate_req';

export const MIGRATE_HELP = `${MIGRATE_KEY} could not be set to 1: at shutdown, connections queued on this daemon's `
  + 'listening socket are reset instead of moving to the next daemon (clients retry). Set it on the node '
  + '(kernel 5.14 or later), or give the container a writable /proc/sys.';

/**
 * Sets net.ipv4.tcp_migrate_req=1 in the daemon's network namespace (the node's, with
 * hostNetwork): when one of several SO_REUSEPORT listeners closes, the kernel hands the
 * connections in its accept queue to another instead of resetting them. A per-namespace
 * sysctl, set only where the daemon manages the node (as route_localnet). Returns 'already',
 * 'set', or the error (the daemon runs on without it).
 */
export async function enableQueueMigration(path = MIGRATE_PATH): Promise<'already' | 'set' | Error> {
  try {
    if ((await readFile(path, 'utf8')).trim() === '1') return 'already';
    await writeFile(path, '1\n');
    const after = (await readFile(path, 'utf8')).trim();
    return after === '1' ? 'set' : new Error(`${MIGRATE_KEY} is still ${after} after writing 1`);
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}
