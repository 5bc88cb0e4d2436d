// `nmi demo` (what `npm start` runs): an IMDS emulator and the daemon, both on loopback, with
// the example cluster state. Extra flags go to the daemon and override the demo's, except
// --manage-iptables=false: the demo often runs as root and must never touch the machine's rules.
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { toDaemonConfig } from '../config/daemon-config.ts';
import { FlagError, parseFlags } from '../config/flags.ts';
import { startDaemon } from '../daemon.ts';
import { parseIdentitiesFile } from '../emulator/default-identities.ts';
import { startImdsEmulator } from '../emulator/imds-emulator.ts';
import { createLogger } from '../observability/logger.ts';
import { untilSignal } from '../cli.ts';

const EXAMPLES = fileURLToPath(new URL('../../daemonset/examples/', import.meta.url));
export const DEMO_EMULATOR_PORT = 8079;

export async function runDemo(argv: string[]): Promise<number> {
  const identities = parseIdentitiesFile(await readFile(`${EXAMPLES}imds-identities.json`, 'utf8'));
  const emulator = await startImdsEmulator({ host: '127.0.0.1', port: DEMO_EMULATOR_PORT, ...identities });
  const defaults = [
    `--cluster-state=${EXAMPLES}cluster-state.yaml`, '--node=demo-node',
    '--metadata-ip=127.0.0.1', `--metadata-port=${emulator.port}`, '--operation-mode=managed',
    '--probe-listen-address=127.0.0.1', '--log-format=text',
  ];
  let config;
  let warnings: string[];
  try {
    const parsed = parseFlags([...defaults, ...argv, '--manage-iptables=false'], {});
    config = toDaemonConfig(parsed.values, {}, parsed.given);
    warnings = parsed.warnings;
  } catch (err) {
    await emulator.close();
    if (err instanceof FlagError) {
      process.stderr.write(`nmi demo: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const log = createLogger(config.logFormat, config.logLevel);
  for (const w of warnings) log.warn(w);
  const daemon = await startDaemon(config, log);
  const at = `http://${config.listenAddress}:${daemon.listener.address.port}`;
  const token = `${at}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net`;
  process.stdout.write(`
podid-nmi demo: IMDS emulator on ${emulator.url}, daemon on ${at}
No iptables rules are installed (--manage-iptables=false): nothing is intercepted, so call the
daemon's listener directly as below; /readyz answers 503 and says so.
Pods (from daemonset/examples/cluster-state.yaml), played with curl --interface:
  127.0.0.10  shop/orders-api     bound to orders-reader (client 1111...)
  127.0.0.11  shop/web            no aadpodidbinding label
  127.0.0.12  kube-system/metrics-agent  excepted (AzurePodIdentityException)
  127.0.0.13  shop/billing-job    bound to billing-writer (client 2222...)
Try:
  curl -s --interface 127.0.0.10 -H Metadata:true '${token}'
  curl -s --interface 127.0.0.11 -H Metadata:true '${token}'
  curl -s --interface 127.0.0.10 -H Metadata:true '${token}&client_id=22222222-2222-4222-8222-222222222222'
  curl -s --interface 127.0.0.12 -H Metadata:true '${token}&client_id=33333333-3333-4333-8333-333333333333'
Metrics: curl -s http://127.0.0.1:${daemon.metricsServer?.address.port ?? daemon.probes.address.port}/metrics | grep podid_nmi_requests
Ctrl-C stops.
`);
  await untilSignal();
  await daemon.close();
  await emulator.close();
  return 0;
}
