// The caller room: which pod is this connection? Two strategies, chosen by the source address:
// - source IP: a pod with its own address, through the IP index (waits out the pod-start race);
// - socket cgroup: a connection from one of the node's own addresses (a hostNetwork pod, or a
//   node process), through the cgroup the kernel recorded on the client socket, the kubelet
//   pod cgroup it lies in, and the pod with that UID in this node's index.
// Nothing is guessed: no cgroup, no pod cgroup, or no pod of this node is a refusal.
import type { Socket } from 'node:net';
import type { PodInfo } from '../cluster/objects.ts';
import type { ClusterState } from '../cluster/view.ts';
import { podCgroupOf } from './kubelet-cgroup.ts';
import { NodeAddresses } from './node-addresses.ts';
import { findCallingPod, sourceIp, type PodLookup } from './pod-lookup.ts';
import type { SocketCgroupReader } from './socket-cgroup.ts';

export type CallerRefusal =
  | Extract<PodLookup, { kind: 'refuse' }>['reason']
  | 'caller_not_in_pod' | 'caller_pod_unknown' | 'caller_unattributable' | 'caller_is_self';

export type Caller =
  | { readonly kind: 'pod'; readonly pod: PodInfo; readonly via: 'source_ip' | 'socket_cgroup' }
  | { readonly kind: 'refuse'; readonly reason: CallerRefusal; readonly via: 'source_ip' | 'socket_cgroup' };

export interface CallerRoomOptions {
  state: ClusterState;
  /** This node; a pod of another node is never a caller here. */
  nodeName: string;
  /** Reads client sockets' cgroups; undefined turns the socket-cgroup strategy off. */
  sockets: SocketCgroupReader | undefined;
  /** Where kubelet's kubepods root sits in the hierarchy ('' for the root). */
  cgroupParent: string;
  /** The daemon's own pod UID: its own requests must never come back to it as a caller. */
  selfUid: string | undefined;
  podWaitMs: number;
}

/** What one connection's socket cgroup said, kept for the connection's life (it cannot change). */
type Attribution = { uid: string } | 'not_in_pod';

export class CallerRoom {
  readonly #o: CallerRoomOptions;
  readonly #node = new NodeAddresses();
  readonly #bySocket = new WeakMap<Socket, Attribution>();

  constructor(options: CallerRoomOptions) {
    this.#o = options;
  }

  /**
   * Which pod is calling. `byCgroup`: attribute connections from the node's own addresses by
   * socket cgroup (on for /host/token, and for metadata routes with --intercept-host-network).
   * `onWait` hears whether a pod-start wait found its pod (for metrics).
   */
  async identify(socket: Socket, signal: AbortSignal, byCgroup: boolean, onWait?: (found: boolean) => void): Promise<Caller> {
    const o = this.#o;
    const ip = sourceIp(socket.remoteAddress);
    if (byCgroup && o.sockets !== undefined && o.state.podsAt(ip).length === 0 && this.#node.has(ip)) {
      return this.#bySocketCgroup(socket, ip);
    }
    // Waits for a first sync, and out the pod-start race, within the caller's share of parked waits.
    const found = await findCallingPod(o.state, ip, o.podWaitMs, signal, onWait);
    return { ...found, via: 'source_ip' };
  }

  async #bySocketCgroup(socket: Socket, ip: string): Promise<Caller> {
    let attribution = this.#bySocket.get(socket);
    if (attribution === undefined) {
      const port = socket.remotePort;
      const read = port === undefined ? undefined : await this.#o.sockets!.lookup(ip, port);
      if (read?.kind !== 'cgroup') return refuse('caller_unattributable');
      const pod = podCgroupOf(read.path, this.#o.cgroupParent);
      attribution = pod === undefined ? 'not_in_pod' : { uid: pod.uid };
      this.#bySocket.set(socket, attribution);
    }
    if (attribution === 'not_in_pod') return refuse('caller_not_in_pod');
    if (attribution.uid === this.#o.selfUid) return refuse('caller_is_self');
    const pod = this.#o.state.podByUid(attribution.uid);
    if (pod === undefined || (this.#o.nodeName !== '' && pod.nodeName !== this.#o.nodeName)) return refuse('caller_pod_unknown');
    return { kind: 'pod', pod, via: 'socket_cgroup' };
  }
}

function refuse(reason: CallerRefusal): Caller {
  return { kind: 'refuse', reason, via: 'socket_cgroup' };
}
