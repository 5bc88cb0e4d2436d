// Whom each connection is charged to, once the socket guard knows: its requests in flight and
// its pipelining cooldown go to the same caller as the connection itself. For most connections
// that is the pod holding the source address; for one from the node's own addresses it is the
// pod its socket cgroup names (a hostNetwork pod), learnt before its first request is read.
import type { Socket } from 'node:net';
import type { Caller } from '../pods/caller.ts';

const charged = new WeakMap<Socket, Caller>();

export function chargeConnection(socket: Socket, caller: Caller): void {
  charged.set(socket, caller);
}

export function connectionCaller(socket: Socket): Caller | undefined {
  return charged.get(socket);
}
