// aad-pod-identity v1.8.17's own NMI command lines (standard-manifests sets), end to end in network namespaces:
// the daemon started with exactly an upstream manifest's or chart rendering's args and env (plus,
// after them, its kubeconfig and JSON logs for the harness) becomes ready, installs NMI's rules,
// and pod A gets its token through the DNAT. See test/e2e/upstream-sets.ts.
import { runUpstreamSets } from './e2e/upstream-sets.ts';

runUpstreamSets('standard-manifests');
