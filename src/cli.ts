#!/usr/bin/env node
// `nmi [flags]` runs the daemon; `nmi demo`, `nmi imds-emulator` and `nmi cleanup-iptables`
// are the other entry points. Exit status 2 is for what the operator must fix in the command.
// Each command loads what it needs when it runs: `nmi status --check ready` is the DaemonSet's
// readiness probe, started every few seconds, and must not pay for pino and the flag table.

const USAGE = `Usage:
  nmi [flags]                 run the daemon
  nmi demo [flags]            run an IMDS emulator and the daemon on loopback with the example cluster state
  nmi imds-emulator [flags]   run only the IMDS emulator (see nmi imds-emulator --help)
  nmi cleanup-iptables        remove the NAT rules and the route_localnet guard, turn route_localnet back off if nmi turned it on (for an uninstall)
  nmi explain [flags]         what the daemon would answer a pod, step by step (see nmi explain --help)
  nmi status [flags]          the running daemon's view of this node (see nmi status --help)
  nmi version                 (also --version)

Flags (NMI v1.8.17's spellings are accepted as NMI took them: --flag=value, --flag value,
-flag, a bare bool for true, -v 5; managed mode always matches in the pod's namespace):
`;

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'imds-emulator': {
      const { runEmulatorCli } = await import('./emulator/imds-emulator.ts');
      return runEmulatorCli(rest);
    }
    case 'demo': {
      const { runDemo } = await import('./demo/demo.ts');
      return runDemo(rest);
    }
    case 'cleanup-iptables':
      return cleanup(rest);
    case 'explain': {
      const { runExplain } = await import('./explain/explain.ts');
      return runExplain(rest, { stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s), env: process.env });
    }
    case 'status': {
      const { runStatus } = await import('./status/status-cli.ts');
      return runStatus(rest, { stdout: (s) => process.stdout.write(s), stderr: (s) => process.stderr.write(s) });
    }
    case 'version':
      process.stdout.write(`${(await import('./config/version.ts')).VERSION}\n`);
      return 0;
    default:
      return runDaemon(argv);
  }
}

async function runDaemon(argv: string[]): Promise<number> {
  const { FlagError, flagHelp, parseFlags } = await import('./config/flags.ts');
  const { toDaemonConfig } = await import('./config/daemon-config.ts');
  const { StateFileError } = await import('./cluster/file-source.ts');
  const { VERSION } = await import('./config/version.ts');
  const { createLogger } = await import('./observability/logger.ts');
  const { registerLeanBuiltins } = await import('./runtime/lean-builtins.ts');
  let config;
  let warnings: string[];
  try {
    const parsed = parseFlags(argv, process.env);
    if (parsed.values.help === true) {
      process.stdout.write(USAGE + flagHelp() + '\n');
      return 0;
    }
    if (parsed.values.version === true) {
      process.stdout.write(`${VERSION}\n`);
      return 0;
    }
    if (parsed.positionals.length > 0) throw new FlagError(`unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
    config = toDaemonConfig(parsed.values, process.env, parsed.given);
    warnings = parsed.warnings;
  } catch (err) {
    if (err instanceof FlagError) return usageError(err.message);
    throw err;
  }
  const log = createLogger(config.logFormat, config.logLevel);
  for (const w of warnings) log.warn(w);
  registerLeanBuiltins();
  const { startDaemon } = await import('./daemon.ts');
  // Listened for from the start: a SIGTERM while the daemon starts (it may wait for its state
  // before joining a rolling update's ports) stops it once started, instead of killing it.
  const signalled = untilSignal();
  let daemon;
  try {
    daemon = await startDaemon(config, log);
  } catch (err) {
    if (err instanceof StateFileError) return usageError(err.message);
    log.fatal({ err }, 'podid-nmi failed to start');
    return 1;
  }
  await signalled;
  log.info('stopping: finishing in-flight requests; NAT rules stay in place');
  await daemon.close();
  log.info('stopped');
  return 0;
}

async function cleanup(argv: string[]): Promise<number> {
  const { FlagError, parseFlags } = await import('./config/flags.ts');
  const { createLogger } = await import('./observability/logger.ts');
  let parsed;
  try {
    parsed = parseFlags(argv, process.env);
  } catch (err) {
    if (err instanceof FlagError) return usageError(err.message);
    throw err;
  }
  const log = createLogger(parsed.values['log-format'] as 'text' | 'json', 'info');
  const { cleanupInterception } = await import('./iptables/index.ts');
  const result = await cleanupInterception({ log });
  log.info({ ...result }, result.routeLocalnet === 'not_turned_off'
    ? 'NAT rules removed; route_localnet and its guard left in place (see the error above)'
    : 'NAT rules removed: pods now reach the metadata service directly');
  return result.routeLocalnet === 'not_turned_off' ? 1 : 0;
}

export function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (signal: NodeJS.Signals): void => {
      process.off('SIGTERM', on);
      process.off('SIGINT', on);
      resolve(signal);
    };
    process.on('SIGTERM', on);
    process.on('SIGINT', on);
  });
}

function usageError(message: string): number {
  process.stderr.write(`nmi: ${message}\n`);
  return 2;
}

if (import.meta.main) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  }, (err: unknown) => {
    process.stderr.write(`nmi: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
