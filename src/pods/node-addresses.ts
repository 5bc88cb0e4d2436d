// Whether a source address is one of the node's own: then the caller is a process of the node
// (a hostNetwork pod or not) and only its socket's cgroup can say which pod it is.
import { networkInterfaces } from 'node:os';

const REFRESH_MS = 1000;

export class NodeAddresses {
  #addresses = new Set<string>();
  #readAt = -Infinity;

  has(ip: string): boolean {
    if (ip.startsWith('127.') || ip === '::1') return true;
    if (this.#addresses.has(ip)) return true;
    // An address added since the last read (a new interface, a secondary IP): re-read, at most once a second.
    const now = performance.now();
    if (now - this.#readAt < REFRESH_MS) return false;
    this.#readAt = now;
    const next = new Set<string>();
    for (const list of Object.values(networkInterfaces())) {
      for (const a of list ?? []) next.add(a.address);
    }
    this.#addresses = next;
    return next.has(ip);
  }
}
