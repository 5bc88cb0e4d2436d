import type { IncomingMessage } from 'node:http';
import type { Caller, CallerRoom } from '../pods/caller-room.ts';
import { sourceIp } from '../pods/pod-lookup.ts';
import type { Trace } from './request-context.ts';

/**
 * The live pod of this node behind a metadata request (every route, not only tokens), parked
 * briefly for the pod-start race; `byCgroup` (--intercept-host-network) attributes connections
 * from the node's own addresses by socket cgroup. How it was found goes in the trace.
 */
export async function callingPod(callers: CallerRoom, byCgroup: boolean, req: IncomingMessage, t: Trace, signal: AbortSignal): Promise<Caller> {
  t.ip = sourceIp(req.socket.remoteAddress);
  const caller = await callers.identify(req.socket, signal, byCgroup, (found) => { t.podWait = found ? 'found' : 'timeout'; });
  t.via = caller.via;
  return caller;
}
