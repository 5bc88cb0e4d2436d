// Where the DNAT sends pods' metadata traffic. A wildcard listener (0.0.0.0, ::) is no
// destination: a DNAT to 0.0.0.0 would blackhole every pod's request. It targets 127.0.0.1
// then, which the wildcard listener accepts: NMI's own layout, independent of the node's IP
// (which can change), and guarded by the route_localnet check like the default listener.
export function dnatTargetFor(listenAddress: string): string {
  return listenAddress === '0.0.0.0' || listenAddress === '::' ? '127.0.0.1' : listenAddress;
}
