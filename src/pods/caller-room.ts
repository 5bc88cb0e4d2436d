// The caller room: which pod is this connection? Strategies, chosen by the source address:
// - source IP: a pod with its own address, through the IP index (waits out the pod-start race);
//   with --attest-pod-sockets, the pod found must also hold the connection's socket
//   (socket-attestation.ts), so a pod sending from another pod's address gets nothing;
// - socket cgroup: a connection from one of the node's own addresses (a hostNetwork pod, or a
//   node process), through the cgroup the kernel recorded on the client socket, the kubelet
//   pod cgroup it lies in, and the pod with that UID in this node's index.
// Nothing is guessed: no cgroup, no pod cgroup, or no pod of this node is a refusal.
// The listener asks the same room at accept (`connectionCaller`), so a hostNetwork pod's
// connections and requests are charged to its own shares, not to the node address's.
import type { Socket } from 'node:net';
import type { PodInfo } from '../cluster/objects.ts';
import type { ClusterState } from '../cluster/view.ts';
import { podCgroupOf } from './kubelet-cgroup.ts';
import { NodeAddresses } from './node-addresses.ts';
import { findCallingPod, lookupPodNow, sourceIp, type PodLookup } from './pod-lookup.ts';
import { podCaller, type Caller as ShareCaller } from './caller.ts';
import type { SocketCgroupReader } from './socket-cgroup.ts';
import type { SocketAttestation } from './socket-attestation.ts';

export type CallerRefusal =
  | Extract<PodLookup, { kind: 'refuse' }>['reason']
  | 'caller_not_in_pod' | 'caller_pod_unknown' | 'caller_unattributable' | 'caller_is_self' | 'caller_not_attested';

export type CallerVia = 'source_ip' | 'socket_cgroup' | 'socket_attestation';

export type Caller =
  | { readonly kind: 'pod'; readonly pod: PodInfo; readonly via: CallerVia }
  | { readonly kind: 'refuse'; readonly reason: CallerRefusal; readonly via: CallerVia };

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
  /** --attest-pod-sockets: pod-network callers found by address must hold the socket too. */
  attestation?: SocketAttestation;
}

/**
 * What one connection's socket cgroup said, kept for the connection's life (it cannot change);
 * `unavailable` (ss busy or failed) is kept only until it is known, so the next request asks again.
 */
type Attribution = { uid: string } | 'not_in_pod' | 'unavailable';

export class CallerRoom {
  readonly #o: CallerRoomOptions;
  readonly #node = new NodeAddresses();
  readonly #bySocket = new WeakMap<Socket, Promise<Attribution>>();

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
    if (byCgroup && this.#byCgroup(ip)) {
      return this.#bySocketCgroup(socket, ip);
    }
    const known = this.identifyNow(socket, byCgroup);
    if (known !== undefined) return known;
    // Waits for a first sync, and out the pod-start race, within the caller's share of parked waits.
    const found = await findCallingPod(o.state, ip, o.podWaitMs, signal, onWait);
    // hostNetwork pods stay with their socket cgroup: their address is the node's, not theirs.
    if (found.kind !== 'pod' || o.attestation === undefined || found.pod.hostNetwork) return { ...found, via: 'source_ip' };
    const verdict = await o.attestation.attest(socket, found.pod, signal);
    return verdict === 'attested'
      ? { kind: 'pod', pod: found.pod, via: 'socket_attestation' }
      : { kind: 'refuse', reason: 'caller_not_attested', via: 'socket_attestation' };
  }

  /**
   * The same answer as `identify`, when it needs no waiting: the state synced, the address's pod
   * (or conflict) known, its socket's attestation already settled. Undefined: `identify` would
   * wait, or read a socket cgroup.
   */
  identifyNow(socket: Socket, byCgroup: boolean): Caller | undefined {
    const o = this.#o;
    if (!o.state.isReady()) return undefined;
    const ip = sourceIp(socket.remoteAddress);
    if (byCgroup && this.#byCgroup(ip)) return undefined;
    const found = lookupPodNow(o.state, ip);
    if (found === undefined) return undefined;
    if (found.kind === 'refuse') return { kind: 'refuse', reason: found.reason, via: 'source_ip' };
    if (o.attestation === undefined || found.pod.hostNetwork) return { kind: 'pod', pod: found.pod, via: 'source_ip' };
    const verdict = o.attestation.verdictNow(socket, found.pod.uid);
    if (verdict === undefined) return undefined;
    return verdict === 'attested'
      ? { kind: 'pod', pod: found.pod, via: 'socket_attestation' }
      : { kind: 'refuse', reason: 'caller_not_attested', via: 'socket_attestation' };
  }

  /**
   * Whose shares a new connection is charged to, when only its socket cgroup can say: a
   * connection from the node's own addresses that no pod's IP holds. Undefined for the others
   * (their source IP says it); else the lookup to start, whose undefined is: no pod (a node
   * process, or a cgroup that could not be read).
   */
  connectionCaller(socket: Socket): (() => Promise<ShareCaller | undefined>) | undefined {
    const ip = sourceIp(socket.remoteAddress);
    if (!this.#byCgroup(ip)) return undefined;
    return () => this.#attribution(socket, ip).then((a) => {
      if (typeof a !== 'object') return undefined;
      // A UID the index does not hold (yet) is charged all the same, as a stranger.
      const pod = this.#o.state.podByUid(a.uid);
      return podCaller(a.uid, pod !== undefined && (this.#o.nodeName === '' || pod.nodeName === this.#o.nodeName));
    });
  }

  #byCgroup(ip: string): boolean {
    return this.#o.sockets !== undefined && this.#o.state.podsAt(ip).length === 0 && this.#node.has(ip);
  }

  async #bySocketCgroup(socket: Socket, ip: string): Promise<Caller> {
    const attribution = await this.#attribution(socket, ip);
    if (attribution === 'unavailable') return refuse('caller_unattributable');
    if (attribution === 'not_in_pod') return refuse('caller_not_in_pod');
    if (attribution.uid === this.#o.selfUid) return refuse('caller_is_self');
    const pod = this.#o.state.podByUid(attribution.uid);
    if (pod === undefined || (this.#o.nodeName !== '' && pod.nodeName !== this.#o.nodeName)) return refuse('caller_pod_unknown');
    return { kind: 'pod', pod, via: 'socket_cgroup' };
  }

  /** One lookup per connection, shared by its admission at accept and its requests. */
  #attribution(socket: Socket, ip: string): Promise<Attribution> {
    let known = this.#bySocket.get(socket);
    if (known === undefined) {
      const asked = this.#lookup(socket, ip);
      known = asked;
      this.#bySocket.set(socket, asked);
      void asked.then((a) => { if (a === 'unavailable' && this.#bySocket.get(socket) === asked) this.#bySocket.delete(socket); });
    }
    return known;
  }

  async #lookup(socket: Socket, ip: string): Promise<Attribution> {
    const port = socket.remotePort;
    const read = port === undefined ? undefined : await this.#o.sockets!.lookup(ip, port);
    if (read?.kind !== 'cgroup') return 'unavailable';
    const pod = podCgroupOf(read.path, this.#o.cgroupParent);
    return pod === undefined ? 'not_in_pod' : { uid: pod.uid };
  }
}

function refuse(reason: CallerRefusal): Caller {
  return { kind: 'refuse', reason, via: 'socket_cgroup' };
}
