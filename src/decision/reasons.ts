// Every refusal the daemon can give: one stable machine-readable reason, the HTTP status,
// and the IMDS-shaped error. Statuses are chosen for how the Azure SDKs react:
// 400 ends a credential chain at once (a pod with no identity must not retry for ~20 s),
// 403 is a hard no without retries, 5xx and 429-with-Retry-After are retried (transient).

export interface RefusalSpec {
  readonly status: number;
  readonly error: string;
  readonly description: string;
  /** Seconds; sent as Retry-After so SDKs back off instead of hammering. */
  readonly retryAfter?: number;
  /** The connection is closed after this answer: what follows on it cannot be trusted or is not wanted. */
  readonly closesConnection?: boolean;
}

export const REFUSALS = {
  // request shape
  metadata_header_missing: { status: 400, error: 'invalid_request', description: 'Required metadata header not specified' },
  forwarded_header: { status: 400, error: 'invalid_request', description: 'Requests with an X-Forwarded-For or Forwarded header are not accepted' },
  target_not_canonical: { status: 400, error: 'invalid_request', description: 'The request target is not a canonical metadata path' },
  query_malformed: { status: 400, error: 'invalid_request', description: 'The query string is malformed' },
  query_duplicate_parameter: { status: 400, error: 'invalid_request', description: 'A query parameter is repeated' },
  api_version_missing: { status: 400, error: 'invalid_request', description: "Required query variable 'api-version' is missing" },
  api_version_invalid: { status: 400, error: 'invalid_request', description: "Query variable 'api-version' is not a valid version" },
  resource_missing: { status: 400, error: 'invalid_request', description: "Required query variable 'resource' is missing" },
  parameter_invalid: { status: 400, error: 'invalid_request', description: 'A query parameter value is too long or holds control characters' },
  selector_multiple: { status: 400, error: 'invalid_request', description: 'Only one of client_id, object_id, msi_res_id or mi_res_id may be given' },
  token_path_malformed: { status: 400, error: 'invalid_request', description: 'Not a valid token path; use /metadata/identity/oauth2/token' },
  body_too_large: { status: 413, error: 'invalid_request', description: 'The request body is too large', closesConnection: true },
  instance_path_invalid: { status: 400, error: 'invalid_request', description: 'An instance metadata path segment holds characters other than letters, digits, - and _' },
  body_length_required: { status: 411, error: 'invalid_request', description: 'A request body needs a Content-Length; chunked bodies are not accepted', closesConnection: true },
  pipelining_refused: { status: 400, error: 'invalid_request', description: 'Pipelined requests are not accepted: send the next request after the answer', closesConnection: true },
  // routes
  instance_metadata_blocked: { status: 403, error: 'access_denied', description: 'Instance metadata is blocked on this node' },
  route_unknown: { status: 404, error: 'not_found', description: 'No such metadata route' },
  method_not_allowed: { status: 405, error: 'method_not_allowed', description: 'Method not allowed on this metadata route' },
  // the calling pod
  state_not_ready: { status: 503, error: 'service_unavailable', description: 'podid-nmi is still loading cluster state', retryAfter: 1 },
  state_stale: { status: 503, error: 'service_unavailable', description: 'podid-nmi has not heard from the Kubernetes API for too long to trust its cluster state', retryAfter: 2 },
  pod_unknown: { status: 503, error: 'service_unavailable', description: 'No running pod is known for this source address yet', retryAfter: 1 },
  pod_ip_conflict: { status: 503, error: 'service_unavailable', description: 'Several live pods claim this source address', retryAfter: 1 },
  // the calling pod, by its socket's cgroup (connections from the node's own addresses)
  caller_not_in_pod: { status: 403, error: 'access_denied', description: 'The calling socket belongs to no pod of this node: node processes get nothing here' },
  caller_pod_unknown: { status: 503, error: 'service_unavailable', description: 'The calling socket\'s cgroup names no running pod of this node yet', retryAfter: 1 },
  caller_unattributable: { status: 503, error: 'service_unavailable', description: 'The calling socket\'s cgroup could not be read', retryAfter: 1 },
  caller_is_self: { status: 503, error: 'service_unavailable', description: 'podid-nmi\'s own request came back to it while its rules are rewritten', retryAfter: 1 },
  // the calling pod, by socket attestation (--attest-pod-sockets): the pod holding the source address must hold the socket
  caller_not_attested: { status: 403, error: 'access_denied', description: 'The connection was not opened in the network namespace of the pod that holds its source address', closesConnection: true },
  // /host/token
  host_token_forbidden: { status: 403, error: 'access_denied', description: 'Only the pods allowed by --host-token-callers may use /host/token' },
  host_token_pod_missing: { status: 400, error: 'invalid_request', description: "missing 'podname' and 'podns' from request header" },
  host_token_pod_unknown: { status: 404, error: 'not_found', description: 'podns/podname name no running pod of this node' },
  // fair shares: one caller (a pod, or an address no pod holds) cannot take what the others need
  connections_over_share: { status: 429, error: 'too_many_requests', description: 'Too many connections from this caller', retryAfter: 1, closesConnection: true },
  requests_over_share: { status: 429, error: 'too_many_requests', description: 'Too many requests in flight from this caller', retryAfter: 1 },
  pod_wait_over_share: { status: 429, error: 'too_many_requests', description: 'Too many requests from this address are already waiting for its pod', retryAfter: 1 },
  // entitlement: "Identity not found" leads, as IMDS's own text, for SDKs and people who search for it
  pod_unlabeled: { status: 400, error: 'invalid_request', description: 'Identity not found: the pod has no aadpodidbinding label' },
  binding_missing: { status: 400, error: 'invalid_request', description: 'Identity not found: no AzureIdentityBinding in the pod\'s namespace selects its aadpodidbinding label' },
  identity_missing: { status: 400, error: 'invalid_request', description: 'Identity not found: the pod\'s bindings name no existing AzureIdentity in its namespace' },
  identity_type_unsupported: { status: 400, error: 'invalid_request', description: 'Identity not found: the bound AzureIdentity\'s spec.type is not 0 (managed identity), 1 (service principal, secret) or 2 (service principal, certificate)' },
  identity_incomplete: { status: 400, error: 'invalid_request', description: 'Identity not found: the bound AzureIdentity has neither clientID nor resourceID' },
  // tokens from Entra ID (the identity's own configuration, decided before any I/O)
  token_source_unknown: { status: 400, error: 'invalid_request', description: 'The AzureIdentity\'s podid-nmi.io/token-source annotation is neither "imds" nor "workload-identity"' },
  auxiliary_tenants_unsupported: { status: 400, error: 'invalid_request', description: 'The AzureIdentity sets spec.auxiliaryTenantIDs, which podid-nmi does not support: a client-credentials grant carries no auxiliary tenant tokens' },
  authority_insecure: { status: 400, error: 'invalid_request', description: 'The AzureIdentity\'s spec.adEndpoint is not an https URL (http only to a loopback address) without credentials or query' },
  tenant_missing: { status: 400, error: 'invalid_request', description: 'The AzureIdentity has no spec.tenantID and podid-nmi has no --tenant-id (AZURE_TENANT_ID)' },
  tenant_invalid: { status: 400, error: 'invalid_request', description: 'The tenant id is neither a GUID nor a domain name' },
  secret_reference_missing: { status: 400, error: 'invalid_request', description: 'The service-principal AzureIdentity has no spec.clientPassword naming its Secret' },
  secret_cross_namespace: { status: 403, error: 'access_denied', description: 'The AzureIdentity\'s spec.clientPassword names a Secret in another namespace; podid-nmi reads those only with --allow-cross-namespace-secrets' },
  // tokens from Entra ID, found while fetching (the description is followed by what was found)
  entra_needs_kubernetes_api: { status: 400, error: 'invalid_request', description: 'Tokens from Entra ID need the Kubernetes API (Secrets, TokenRequest); podid-nmi runs from a --cluster-state file' },
  secret_missing: { status: 400, error: 'invalid_request', description: 'The service principal\'s Secret does not exist' },
  secret_key_missing: { status: 400, error: 'invalid_request', description: 'The service principal\'s Secret has no usable key' },
  secret_unreadable: { status: 503, error: 'service_unavailable', description: 'The service principal\'s Secret could not be read from the Kubernetes API', retryAfter: 2 },
  certificate_invalid: { status: 400, error: 'invalid_request', description: 'The service principal\'s certificate could not be used' },
  service_account_token_refused: { status: 403, error: 'access_denied', description: 'The Kubernetes API refused a service-account token for this pod' },
  service_account_token_unavailable: { status: 503, error: 'service_unavailable', description: 'A service-account token for this pod could not be had from the Kubernetes API', retryAfter: 2 },
  identity_not_bound: { status: 403, error: 'access_denied', description: 'The requested identity is not bound to this pod' },
  // standard mode: MIC is expected to assign an identity but has not yet (NMI's find-identity-retry-interval, 5 s)
  assignment_pending: { status: 503, error: 'service_unavailable', description: 'Identity not yet assigned: aad-pod-identity MIC has not assigned this pod\'s identity to the node yet', retryAfter: 5 },
  object_id_unverifiable: { status: 403, error: 'access_denied', description: 'object_id cannot be checked against AzureIdentities; request by client_id or msi_res_id' },
  // upstream and the daemon itself
  upstream_timeout: { status: 503, error: 'service_unavailable', description: 'The metadata service did not answer in time', retryAfter: 2 },
  upstream_unreachable: { status: 503, error: 'service_unavailable', description: 'The metadata service cannot be reached', retryAfter: 2 },
  upstream_invalid: { status: 502, error: 'bad_gateway', description: 'The metadata service sent an answer that cannot be relayed' },
  upstream_busy: { status: 429, error: 'too_many_requests', description: 'Too many requests are waiting for the metadata service', retryAfter: 1 },
  // the IMDS budget: Retry-After is computed from the queue; the value here is the floor
  upstream_queued: { status: 429, error: 'too_many_requests', description: 'The token is still queued for the metadata service; retry after the time given', retryAfter: 1 },
  upstream_share_exceeded: { status: 429, error: 'too_many_requests', description: 'This pod has its share of requests waiting for the metadata service', retryAfter: 1 },
  shutting_down: { status: 503, error: 'service_unavailable', description: 'podid-nmi is restarting; retry after the time given', retryAfter: 1 },
} as const satisfies Record<string, RefusalSpec>;

export type Reason = keyof typeof REFUSALS;

export const REASONS = Object.keys(REFUSALS) as Reason[];
