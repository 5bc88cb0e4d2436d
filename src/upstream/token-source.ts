// The one interface every token source implements: IMDS (the node's managed identities) and
// Entra ID with a client secret, a certificate, or a federated service-account token. The
// decision names the source (decision/token-source.ts); the order below carries only checked
// names; a source turns it into a token answer in IMDS's JSON shape, or an error to relay.
// The cache and the schedulers see an order only by its key: two orders with one key are the
// same token, so the key names everything that makes the token differ.
import type { TokenSourceChoice } from '../decision/token-source.ts';
import type { UpstreamAnswer } from './imds-client.ts';

export interface PodRef {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
}

type ImdsOrder = { readonly kind: 'imds'; readonly key: string };

export interface EntraOrder {
  readonly kind: 'entra';
  readonly key: string;
  readonly source: Exclude<TokenSourceChoice, { kind: 'imds' }>;
  /** As the pod asked for it, echoed in the answer; the scope is `{resource}/.default`. */
  readonly resource: string;
  /** The pod the request came from: a federated token is bound to it. */
  readonly pod: PodRef;
}

export type TokenOrder = ImdsOrder | EntraOrder;

export interface TokenSource<O extends TokenOrder = TokenOrder> {
  fetch(order: O, signal: AbortSignal): Promise<UpstreamAnswer>;
}
