#!/usr/bin/env -S node --no-concurrent-recompilation
// Owns the command line: parses flags with commander and hands them to the config loader and
// startSluice. No logic lives here beyond wiring and signal handling.
// First: V8 flags that must be in force before the rest is loaded.
import './v8-memory-flags.js';
import { Command, InvalidArgumentError, Option } from 'commander';
import { ConfigError, loadConfig } from './config/load.js';
import { logger } from './observe/logger.js';
import { SEED_DEFAULTS } from './seed/defaults.js';

// Each command imports what it runs when it runs: a proxy holding many idle clients should not
// carry the migration runner, the seeder or the advisor (and pg with them) in its memory.
const loadRulesModule = () => import('./rules/loader.js');

function nonNegativeNumber(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) {
    throw new InvalidArgumentError('expected a number of seconds, 0 or more');
  }
  return n;
}

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('expected a positive integer');
  return n;
}

const program = new Command()
  .name('sluice')
  .description('PostgreSQL wire-protocol proxy: pooling, query-aware caching, rules, metrics');

program
  .command('serve')
  .description('run the proxy (with no upstream: start an embedded PostgreSQL and proxy to it)')
  .option('--config <file>', 'YAML configuration file (env: SLUICE_CONFIG)')
  .option('--listen <host:port>', 'where clients connect (default 127.0.0.1:6432; env: SLUICE_LISTEN)')
  .option('--upstream <url>', 'postgres://user[:password]@host:port/database (env: SLUICE_UPSTREAM)')
  .addOption(
    new Option('--auth <method>', 'client authentication (default scram-sha-256; env: SLUICE_AUTH)').choices([
      'trust',
      'md5',
      'scram-sha-256',
    ]),
  )
  .option('--users-file <file>', 'userlist.txt with "user" "password" lines (env: SLUICE_USERS_FILE)')
  .addOption(
    new Option('--pool-mode <mode>', 'default transaction (env: SLUICE_POOL_MODE)').choices([
      'session',
      'transaction',
      'statement',
    ]),
  )
  .option(
    '--pool-size <n>',
    'server connections per (database, user) (default 20; env: SLUICE_POOL_SIZE)',
    positiveInt,
  )
  .option(
    '--max-client-conn <n>',
    'client connection limit (default 1000; env: SLUICE_MAX_CLIENT_CONN)',
    positiveInt,
  )
  .option('--rules <dir>', 'rules directory, watched and reloaded on change (env: SLUICE_RULES)')
  .option('--cache', 'answer repeated reads from the result cache (env: SLUICE_CACHE=true)')
  .option('--redis <url>', 'shared cache tier and invalidation bus, redis://host:port (env: SLUICE_REDIS)')
  .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (env: SLUICE_LOG_LEVEL)')
  .option(
    '--http <host:port>',
    '/metrics, /healthz, /readyz, /status (a port alone: on 127.0.0.1; env: SLUICE_HTTP)',
  )
  .option(
    '--admin-users <a,b>',
    'users who may use the admin console, database "sluice" (env: SLUICE_ADMIN_USERS)',
  )
  .option('--tls-cert <file>', 'PEM certificate for client TLS, with --tls-key (env: SLUICE_TLS_CERT)')
  .option('--tls-key <file>', 'PEM private key for client TLS (env: SLUICE_TLS_KEY)')
  .option('--tls-required', 'refuse clients that do not use TLS (env: SLUICE_TLS_REQUIRED=true)')
  .option(
    '--auth-timeout <seconds>',
    'drop a client not logged in after this long (default 60; env: SLUICE_AUTH_TIMEOUT)',
    nonNegativeNumber,
  )
  .option(
    '--max-user-client-connections <n>',
    'client connections per user (env: SLUICE_MAX_USER_CLIENT_CONNECTIONS)',
    positiveInt,
  )
  .option(
    '--max-db-client-connections <n>',
    'client connections per database (env: SLUICE_MAX_DB_CLIENT_CONNECTIONS)',
    positiveInt,
  )
  .option(
    '--client-idle-timeout <seconds>',
    'close clients idle between transactions this long (0: never; env: SLUICE_CLIENT_IDLE_TIMEOUT)',
    nonNegativeNumber,
  )
  .option(
    '--idle-transaction-timeout <seconds>',
    'close clients idle inside a transaction this long and roll it back (env: SLUICE_IDLE_TRANSACTION_TIMEOUT)',
    nonNegativeNumber,
  )
  .option(
    '--no-tcp-keepalive',
    'no TCP keepalive on client and server sockets (env: SLUICE_TCP_KEEPALIVE=false)',
  )
  .option(
    '--tcp-keepidle <seconds>',
    'silence before the first keepalive probe (0: the OS default; env: SLUICE_TCP_KEEPIDLE)',
    nonNegativeNumber,
  )
  .option(
    '--query-timeout <seconds>',
    'cancel a request waiting on its server this long, 57014 (0: never; env: SLUICE_QUERY_TIMEOUT)',
    nonNegativeNumber,
  )
  .option(
    '--server-check-delay <seconds>',
    'check a server idle this long before reuse (default 30; env: SLUICE_SERVER_CHECK_DELAY)',
    nonNegativeNumber,
  )
  .option(
    '--server-check-query <sql>',
    "the check ('' turns it off; default select 1; env: SLUICE_SERVER_CHECK_QUERY)",
  )
  .action(async (flags: Record<string, unknown>) => {
    let config: ReturnType<typeof loadConfig>;
    // RELOAD (admin console) reads the same sources again.
    const load = () =>
      loadConfig({
        file: (flags.config as string | undefined) ?? process.env.SLUICE_CONFIG,
        flags: {
          listen: flags.listen,
          upstream: flags.upstream,
          auth: flags.auth,
          users_file: flags.usersFile,
          pool_mode: flags.poolMode,
          pool_size: flags.poolSize,
          max_client_conn: flags.maxClientConn,
          cache: flags.cache,
          redis: flags.redis,
          rules: flags.rules,
          log_level: flags.logLevel,
          http: flags.http,
          admin_users: flags.adminUsers,
          tls_cert: flags.tlsCert,
          tls_key: flags.tlsKey,
          tls_required: flags.tlsRequired,
          auth_timeout: flags.authTimeout,
          max_user_client_connections: flags.maxUserClientConnections,
          max_db_client_connections: flags.maxDbClientConnections,
          client_idle_timeout: flags.clientIdleTimeout,
          idle_transaction_timeout: flags.idleTransactionTimeout,
          tcp_keepalive: flags.tcpKeepalive === false ? false : undefined,
          tcp_keepidle: flags.tcpKeepidle,
          query_timeout: flags.queryTimeout,
          server_check_delay: flags.serverCheckDelay,
          server_check_query: flags.serverCheckQuery,
        },
      });
    try {
      config = load();
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`sluice: invalid configuration:\n${err.message}\n`);
        process.exit(2);
      }
      throw err;
    }
    const { startSluice } = await import('./app.js');
    let sluice: Awaited<ReturnType<typeof startSluice>>;
    try {
      sluice = await startSluice(config, { reloadConfig: load, onShutdown: () => process.exit(0) });
    } catch (err) {
      const { RulesError } = await loadRulesModule();
      if (err instanceof RulesError) {
        process.stderr.write(`sluice: rules refused:\n${err.problems.join('\n')}\n`);
        process.exit(2);
      }
      throw err;
    }
    logger.info(
      {
        listen: `${sluice.host}:${sluice.port}`,
        upstream: `${sluice.upstream.host}:${sluice.upstream.port}`,
        mode: config.pool_mode,
        cache: config.cache ? (config.redis ? 'memory + redis' : 'memory') : 'off',
        http: sluice.http ? `${sluice.http.host}:${sluice.http.port}` : 'off',
      },
      'sluice is listening',
    );
    process.stdout.write(`Sluice is ready. Connect with:\n  psql "${sluice.connectionString}"\n`);
    let signals = 0;
    const stop = (signal: string) => {
      signals++;
      if (signals > 1) {
        logger.warn({ signal }, 'second signal: exiting now');
        process.exit(1);
      }
      logger.info({ signal }, 'shutting down');
      sluice.stop().then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  });

const rules = program.command('rules').description('check and explain rules files');

rules
  .command('check')
  .description('load a rules directory and run the test cases its files carry (exit 1 on a failure)')
  .argument('[dir]', 'rules directory', 'rules')
  .action(async (dir: string) => {
    const { checkRules } = await import('./rules/commands.js');
    await runRulesCommand(() => checkRules(dir));
  });

rules
  .command('explain')
  .description('show the analysis of a statement, the rules that match it and the final query')
  .argument('<sql>', 'the statement')
  .option('--rules <dir>', 'rules directory', 'rules')
  .option('--user <name>', 'user to match rules against', 'postgres')
  .option('--database <name>', 'database to match rules against', 'postgres')
  .option('--application-name <name>', 'application_name to match rules against')
  .action(async (sql: string, flags: Record<string, string | undefined>) => {
    const { explainStatement } = await import('./rules/commands.js');
    const { loadRulesDir } = await loadRulesModule();
    await runRulesCommand(() =>
      explainStatement(sql, loadRulesDir(flags.rules ?? 'rules'), {
        user: flags.user ?? 'postgres',
        database: flags.database ?? 'postgres',
        applicationName: flags.applicationName,
      }),
    );
  });

/** Prints a rules command's output; a rules directory that does not load exits 2 with its problems. */
async function runRulesCommand(run: () => Promise<{ text: string; code: number }>): Promise<void> {
  // `log: true` rules log their matches in the proxy; here the report is the output.
  logger.level = 'warn';
  try {
    const { text, code } = await run();
    process.stdout.write(`${text}\n`);
    process.exitCode = code;
  } catch (err) {
    const { RulesError } = await loadRulesModule();
    if (err instanceof RulesError) {
      process.stderr.write(`sluice: rules refused:\n${err.problems.join('\n')}\n`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
}

program
  .command('advise')
  .description(
    'propose CREATE INDEX CONCURRENTLY statements from a workload and the catalog (never runs them)',
  )
  .requiredOption('--upstream <url>', 'PostgreSQL to read the catalog (and pg_stat_statements) from')
  .option('--database <name>', 'database to advise on (default: the one in --upstream)')
  .option(
    '--queries <file>',
    'workload from a file of statements separated by ; instead of pg_stat_statements',
  )
  .option('--limit <n>', 'at most this many proposals', '20')
  .option('--min-rows <n>', 'leave tables with fewer rows alone', '1000')
  .action(async (flags: Record<string, string | undefined>) => {
    logger.level = 'warn';
    const { advise } = await import('./rules/advise-command.js');
    const { text, code } = await advise({
      upstream: flags.upstream!,
      database: flags.database,
      queries: flags.queries,
      limit: Number(flags.limit),
      minRows: Number(flags.minRows),
    });
    process.stdout.write(`${text}\n`);
    process.exitCode = code;
  });

// --- migrate / seed -----------------------------------------------------------------------------

function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('expected a whole number');
  return n;
}

/** --upstream and --dir, shared by every migrate subcommand. */
function targetOptions(cmd: Command): Command {
  return cmd
    .option(
      '--upstream <url>',
      'database to migrate (env: SLUICE_UPSTREAM; default: the embedded PostgreSQL)',
    )
    .option('--dir <dir>', 'migrations directory', 'migrations');
}

function migrateFlags(flags: Record<string, unknown>) {
  return {
    upstream: (flags.upstream as string | undefined) ?? process.env.SLUICE_UPSTREAM,
    dir: flags.dir as string,
    force: flags.force === true,
    timeSeries: flags.timeSeries as 'auto' | 'timescaledb' | 'partitions' | undefined,
  };
}

const printLine = (line: string) => process.stdout.write(`${line}\n`);
const migrate = program.command('migrate').description('apply, revert and inspect schema migrations');

targetOptions(migrate.command('up'))
  .description('apply pending migrations (all, or the next N), each in its own transaction')
  .argument('[n]', 'how many to apply', positiveInt)
  .option('--force', 'accept applied migrations whose file changed (records the new checksum)')
  .addOption(
    new Option('--time-series <storage>', 'time-series tables: TimescaleDB or native partitioning')
      .choices(['auto', 'timescaledb', 'partitions'])
      .default('auto'),
  )
  .action(async (n: number | undefined, flags: Record<string, unknown>) => {
    const { runMigrate } = await import('./migrate/commands.js');
    process.exitCode = await runMigrate('up', n, migrateFlags(flags), printLine);
  });

targetOptions(migrate.command('down'))
  .description('revert the last N applied migrations (default 1; 0 reverts all)')
  .argument('[n]', 'how many to revert, 0 for all', nonNegativeInt, 1)
  .option('--force', 'accept applied migrations whose file changed')
  .action(async (n: number, flags: Record<string, unknown>) => {
    const { runMigrate } = await import('./migrate/commands.js');
    process.exitCode = await runMigrate('down', n, migrateFlags(flags), printLine);
  });

targetOptions(migrate.command('status'))
  .description('show the version, each migration and how time-series tables are stored')
  .action(async (flags: Record<string, unknown>) => {
    const { runMigrate } = await import('./migrate/commands.js');
    process.exitCode = await runMigrate('status', undefined, migrateFlags(flags), printLine);
  });

migrate
  .command('new')
  .description('create the next NNNN_name.up.sql / .down.sql pair')
  .argument('<name>', 'what the migration does, e.g. add_fills')
  .option('--dir <dir>', 'migrations directory', 'migrations')
  .action(async (name: string, flags: Record<string, unknown>) => {
    const { runMigrate } = await import('./migrate/commands.js');
    process.exitCode = await runMigrate('new', name, migrateFlags(flags), printLine);
  });

program
  .command('seed')
  .description('load deterministic demo data into the trading schema with COPY')
  .option('--upstream <url>', 'database to seed (env: SLUICE_UPSTREAM; default: the embedded PostgreSQL)')
  .option('--bots <n>', 'bots', positiveInt, SEED_DEFAULTS.bots)
  .option('--symbols <n>', 'symbols (1-minute bars for each)', positiveInt, SEED_DEFAULTS.symbols)
  .option('--days <n>', 'days of history up to --end', positiveInt, SEED_DEFAULTS.days)
  .option('--seed <n>', 'random seed: the same seed gives the same data', nonNegativeInt, SEED_DEFAULTS.seed)
  .option('--end <time>', 'last minute of data, ISO 8601 (default: now)')
  .option(
    '--tick-minutes <n>',
    'latest minutes per symbol that also get ticks',
    nonNegativeInt,
    SEED_DEFAULTS.tickMinutes,
  )
  .option(
    '--ticks-per-minute <n>',
    'ticks per minute in that window',
    nonNegativeInt,
    SEED_DEFAULTS.ticksPerMinute,
  )
  .option('--reset', 'empty the seeded tables first')
  .action(async (flags: Record<string, unknown>) => {
    const end = flags.end === undefined ? undefined : new Date(flags.end as string);
    if (end && Number.isNaN(end.getTime())) {
      process.stderr.write('sluice seed: --end is not a date\n');
      process.exitCode = 2;
      return;
    }
    const { runSeed } = await import('./migrate/commands.js');
    process.exitCode = await runSeed(
      (flags.upstream as string | undefined) ?? process.env.SLUICE_UPSTREAM,
      {
        bots: flags.bots as number,
        symbols: flags.symbols as number,
        days: flags.days as number,
        seed: flags.seed as number,
        end,
        tickMinutes: flags.tickMinutes as number,
        ticksPerMinute: flags.ticksPerMinute as number,
        reset: flags.reset === true,
      },
      printLine,
    );
  });

program.parseAsync().catch((err: unknown) => {
  logger.error({ err }, 'sluice failed');
  process.exitCode = 1;
});
