// Owns `sluice seed`: realistic, deterministic demo and benchmark data for the trading schema
// (bots, symbols, 1-minute bars, ticks, signals, news, orders, trades, positions, balances,
// snapshots, alerts), loaded with COPY in one transaction.
import { performance } from 'node:perf_hooks';
import type pg from 'pg';
import { copyIn } from './copy-in.js';

export interface SeedOptions {
  bots: number;
  symbols: number;
  days: number;
  /** PRNG seed: the same seed, sizes and end give the same rows. */
  seed: number;
  /** Last minute of data (default: now, floored to the minute). Fix it for byte-identical runs. */
  end?: Date;
  /** Minutes (counted back from each symbol's last bar) that also get ticks. */
  tickMinutes: number;
  ticksPerMinute: number;
  /** Empty the seeded tables first (TRUNCATE ... RESTART IDENTITY CASCADE). */
  reset?: boolean;
  log?: (line: string) => void;
}

export { SEED_DEFAULTS } from './defaults.js';

export interface SeedReport {
  tables: Array<{ table: string; rows: number; seconds: number; rowsPerSecond: number }>;
  totalRows: number;
  seconds: number;
  copyMethod: string;
}

export class SeedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SeedError';
  }
}

/** Tables in load order (foreign keys point backwards), emptied by --reset. */
const SEEDED_TABLES = [
  'bots',
  'symbols',
  'prices',
  'bars_1m',
  'ticks',
  'signals',
  'news_articles',
  'orders',
  'trades',
  'positions',
  'account_balances',
  'portfolio_snapshots',
  'risk_alerts',
  'audit_trail',
];

const MINUTE = 60_000;
/** Rows are batched into CopyData messages of about this size. */
const CHUNK_BYTES = 256 * 1024;

const KNOWN_EQUITIES = [
  'AAPL',
  'MSFT',
  'NVDA',
  'AMZN',
  'GOOGL',
  'META',
  'TSLA',
  'JPM',
  'V',
  'XOM',
  'SPY',
  'QQQ',
];
const KNOWN_CRYPTO = ['BTCUSDT', 'ETHUSDT', 'SOLUSDT', 'BNBUSDT', 'XRPUSDT', 'ADAUSDT'];
const KNOWN_BOTS: Array<[string, string, string]> = [
  ['shortseller_001', 'Shortseller', 'mean_reversion_short'],
  ['momentum_001', 'Momentum', 'momentum_breakout'],
  ['lxalgo_001', 'LXAlgo', 'lx_multi_indicator'],
];
const AGENTS = ['momentum_agent', 'mean_reversion_agent', 'sentiment_agent', 'volatility_agent'];
const NEWS_SOURCES = ['reuters', 'bloomberg', 'coindesk', 'wsj', 'ft'];

interface SymbolSeries {
  symbol: string;
  crypto: boolean;
  /** Indexes into the minute grid where this symbol has a bar. */
  minutes: number[];
  closes: Float64Array;
  volumes: Float64Array;
}

/** mulberry32: small, fast, and the same sequence on every platform. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function seedDatabase(client: pg.Client, opts: SeedOptions): Promise<SeedReport> {
  const log = opts.log ?? (() => {});
  for (const [name, value] of Object.entries({
    bots: opts.bots,
    symbols: opts.symbols,
    days: opts.days,
    tickMinutes: opts.tickMinutes,
    ticksPerMinute: opts.ticksPerMinute,
  })) {
    if (!Number.isInteger(value) || value < (name === 'tickMinutes' || name === 'ticksPerMinute' ? 0 : 1)) {
      throw new SeedError(`--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} must be a whole number`);
    }
  }
  const missing = await client.query<{ t: string }>(
    'SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL',
    [SEEDED_TABLES],
  );
  if (missing.rows.length > 0) {
    throw new SeedError(
      `the trading schema is not there (missing ${missing.rows.map((r) => r.t).join(', ')}); run \`sluice migrate up\` first`,
    );
  }
  const rand = prng(opts.seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
  const endMs = Math.floor((opts.end?.getTime() ?? Date.now()) / MINUTE) * MINUTE;
  const totalMinutes = opts.days * 1440;
  const startMs = endMs - (totalMinutes - 1) * MINUTE;
  // Timestamps are formatted once per minute and shared by every symbol.
  const stamps: string[] = new Array(totalMinutes);
  const equityOpen: boolean[] = new Array(totalMinutes);
  for (let i = 0; i < totalMinutes; i++) {
    const d = new Date(startMs + i * MINUTE);
    stamps[i] = d.toISOString();
    const minuteOfDay = d.getUTCHours() * 60 + d.getUTCMinutes();
    const weekday = d.getUTCDay() !== 0 && d.getUTCDay() !== 6;
    equityOpen[i] = weekday && minuteOfDay >= 13 * 60 + 30 && minuteOfDay < 20 * 60; // NYSE session in UTC
  }
  const ts = (ms: number) => new Date(ms).toISOString();

  const report: SeedReport = {
    tables: [],
    totalRows: 0,
    seconds: 0,
    copyMethod: 'FROM STDIN (CopyData via pg)',
  };
  const started = performance.now();
  await client.query('BEGIN');
  try {
    if (opts.reset) {
      await client.query(`TRUNCATE ${SEEDED_TABLES.join(', ')} RESTART IDENTITY CASCADE`);
    } else {
      const existing = await client.query('SELECT 1 FROM bots LIMIT 1');
      if (existing.rowCount)
        throw new SeedError('bots already has rows; pass --reset to replace the seeded data');
    }
    const load = async (table: string, columns: string, rows: Iterable<string>) => {
      const t0 = performance.now();
      const n = await copyIn(client, `COPY ${table} (${columns}) FROM STDIN`, chunked(rows));
      const seconds = (performance.now() - t0) / 1000;
      report.tables.push({ table, rows: n, seconds, rowsPerSecond: n / Math.max(seconds, 1e-6) });
      report.totalRows += n;
      log(`${table}: ${n} rows`);
    };

    // Symbols: well-known names first (what examples and rules tests query), then generated ones.
    const symbols: Array<{ symbol: string; crypto: boolean }> = [];
    const used = new Set<string>();
    const cryptoShare = 0.1;
    for (let i = 0; symbols.length < opts.symbols; i++) {
      const crypto = i < KNOWN_CRYPTO.length * 2 ? i % 2 === 1 : rand() < cryptoShare;
      let name = crypto ? KNOWN_CRYPTO[Math.floor(i / 2)] : KNOWN_EQUITIES[Math.floor(i / 2)];
      if (i >= KNOWN_CRYPTO.length * 2 || name === undefined) {
        const len = crypto ? 3 + Math.floor(rand() * 2) : 2 + Math.floor(rand() * 3);
        name = '';
        for (let k = 0; k < len; k++) name += String.fromCharCode(65 + Math.floor(rand() * 26));
        if (crypto) name += 'USDT';
      }
      if (used.has(name)) continue;
      used.add(name);
      symbols.push({ symbol: name, crypto });
    }
    await load(
      'symbols',
      'symbol, name, asset_class, exchange, currency, listed_at',
      (function* () {
        for (const s of symbols) {
          const exchange = s.crypto ? 'BINANCE' : rand() < 0.55 ? 'NASDAQ' : 'NYSE';
          yield `${s.symbol}\t${s.symbol} ${s.crypto ? 'Token' : 'Inc.'}\t${s.crypto ? 'crypto' : 'equity'}\t${exchange}\tUSD\t${ts(startMs - 365 * 1440 * MINUTE)}\n`;
        }
      })(),
    );

    // A random walk per symbol: bars where its market is open, 1-minute volatility by asset class.
    const series: SymbolSeries[] = symbols.map((s) => {
      const minutes: number[] = [];
      for (let i = 0; i < totalMinutes; i++) if (s.crypto || equityOpen[i]) minutes.push(i);
      const closes = new Float64Array(minutes.length);
      const volumes = new Float64Array(minutes.length);
      let price = Math.exp(Math.log(5) + rand() * Math.log(200)) * (s.symbol.startsWith('BTC') ? 300 : 1);
      const sigma = s.crypto ? 0.0012 : 0.0006;
      const baseVolume = s.crypto ? 20 + rand() * 200 : 500 + rand() * 20_000;
      for (let k = 0; k < minutes.length; k++) {
        price *= Math.exp(sigma * gauss());
        closes[k] = price;
        volumes[k] = baseVolume * (0.2 + rand() * 1.8);
      }
      return { symbol: s.symbol, crypto: s.crypto, minutes, closes, volumes };
    });

    await load(
      'bars_1m',
      'symbol, ts, open, high, low, close, volume, vwap, trade_count',
      (function* () {
        for (const s of series) {
          const digits = s.crypto ? 8 : 4;
          let prev = s.closes[0] as number;
          for (let k = 0; k < s.minutes.length; k++) {
            const close = s.closes[k] as number;
            const open = prev;
            const wiggle = close * 0.0004;
            const high = Math.max(open, close) + wiggle * rand();
            const low = Math.min(open, close) - wiggle * rand();
            const vwap = (open + close + high + low) / 4;
            const volume = s.volumes[k] as number;
            yield `${s.symbol}\t${stamps[s.minutes[k] as number]}\t${open.toFixed(digits)}\t${high.toFixed(digits)}\t${low.toFixed(digits)}\t${close.toFixed(digits)}\t${volume.toFixed(2)}\t${vwap.toFixed(digits)}\t${Math.max(1, Math.round(volume / 50))}\n`;
            prev = close;
          }
        }
      })(),
    );

    const lastPrice = (s: SymbolSeries) => s.closes[s.closes.length - 1] as number;
    const lastMs = (s: SymbolSeries) => startMs + (s.minutes[s.minutes.length - 1] as number) * MINUTE;
    await load(
      'prices',
      'symbol, price, bid, ask, ts',
      (function* () {
        for (const s of series) {
          if (s.minutes.length === 0) continue;
          const p = lastPrice(s);
          const d = s.crypto ? 8 : 4;
          yield `${s.symbol}\t${p.toFixed(d)}\t${(p * 0.9998).toFixed(d)}\t${(p * 1.0002).toFixed(d)}\t${ts(lastMs(s) + 59_000)}\n`;
        }
      })(),
    );

    await load(
      'ticks',
      'symbol, ts, price, size, bid, ask, exchange',
      (function* () {
        for (const s of series) {
          const d = s.crypto ? 8 : 4;
          const exchange = s.crypto ? 'BINANCE' : 'XNAS';
          const from = Math.max(0, s.minutes.length - opts.tickMinutes);
          for (let k = from; k < s.minutes.length; k++) {
            const close = s.closes[k] as number;
            const base = startMs + (s.minutes[k] as number) * MINUTE;
            for (let j = 0; j < opts.ticksPerMinute; j++) {
              const price = close * (1 + 0.0003 * gauss());
              const at = base + Math.floor(((j + rand()) / opts.ticksPerMinute) * MINUTE);
              yield `${s.symbol}\t${ts(at)}\t${price.toFixed(d)}\t${(1 + rand() * 99).toFixed(4)}\t${(price * 0.9999).toFixed(d)}\t${(price * 1.0001).toFixed(d)}\t${exchange}\n`;
            }
          }
        }
      })(),
    );

    const bots = Array.from({ length: opts.bots }, (_, i) => {
      const known = KNOWN_BOTS[i];
      const id = known?.[0] ?? `bot_${String(i + 1).padStart(3, '0')}`;
      return {
        id,
        name: known?.[1] ?? `Bot ${i + 1}`,
        strategy: known?.[2] ?? pick(['pairs_trading', 'market_making', 'trend_following']),
        capital: 50_000 + Math.round(rand() * 20) * 5_000,
        pnl: 0,
      };
    });

    await load(
      'bots',
      'bot_id, bot_name, strategy, status, initial_capital, current_equity, config, last_heartbeat',
      bots.map(
        (b) =>
          `${b.id}\t${b.name}\t${b.strategy}\tactive\t${b.capital.toFixed(2)}\t${b.capital.toFixed(2)}\t{"max_position_pct": 0.05, "symbols": "all"}\t${ts(endMs)}\n`,
      ),
    );

    // Signals (a few per bot-hour), each possibly acted on by an order.
    const signalRows: string[] = [];
    const signalsFor: Array<{ id: number; bot: number; symbol: number; at: number; dir: string }> = [];
    const tradable = series.filter((s) => s.minutes.length > 0);
    if (tradable.length === 0) throw new SeedError('no symbol has a bar in the window; widen --days');
    let signalId = 0;
    for (let b = 0; b < bots.length; b++) {
      for (let h = 0; h < opts.days * 24; h++) {
        for (let n = 0; n < 3; n++) {
          const symbol = Math.floor(rand() * tradable.length);
          const strength = Math.max(-1, Math.min(1, gauss() * 0.4));
          const dir = Math.abs(strength) < 0.1 ? 'flat' : strength > 0 ? 'long' : 'short';
          const at = startMs + h * 60 * MINUTE + Math.floor(rand() * 60 * MINUTE);
          const acted = dir !== 'flat' && rand() < 0.25;
          signalId++;
          if (acted) signalsFor.push({ id: signalId, bot: b, symbol, at, dir });
          const features = `{"rsi": ${(20 + rand() * 60).toFixed(1)}, "zscore": ${gauss().toFixed(3)}, "volume_ratio": ${(0.5 + rand() * 2).toFixed(2)}}`;
          signalRows.push(
            `${signalId}\t${(bots[b] as { id: string }).id}\t${(tradable[symbol] as SymbolSeries).symbol}\t${pick(AGENTS)}\t${dir}\t${strength.toFixed(4)}\t${(0.3 + rand() * 0.7).toFixed(4)}\t${features}\t${dir} bias from ${pick(['momentum', 'reversal', 'news flow', 'volatility regime'])}\t${acted ? 't' : 'f'}\t${ts(at)}\n`,
          );
        }
      }
    }
    await load(
      'signals',
      'id, bot_id, symbol, agent, direction, strength, confidence, features, explanation, acted_on, generated_at',
      signalRows,
    );

    await load(
      'news_articles',
      'symbol, headline, source, url, sentiment_score, published_at',
      (function* () {
        let n = 0;
        for (const s of series) {
          for (let d = 0; d < opts.days; d++) {
            if (rand() < 0.6) continue;
            n++;
            const score = Math.max(-1, Math.min(1, gauss() * 0.5));
            const mood =
              score > 0.2 ? 'beats expectations' : score < -0.2 ? 'faces pressure' : 'holds steady';
            yield `${s.symbol}\t${s.symbol} ${mood} as ${pick(['volume rises', 'analysts update targets', 'markets digest rates', 'flows shift'])}\t${pick(NEWS_SOURCES)}\thttps://news.example/${n}\t${score.toFixed(4)}\t${ts(startMs + d * 1440 * MINUTE + Math.floor(rand() * 1440) * MINUTE)}\n`;
          }
        }
      })(),
    );

    // Orders from acted-on signals; filled ones become trades, most of them closed later on.
    const orderRows: string[] = [];
    const tradeRows: string[] = [];
    const openPositions = new Map<
      string,
      { bot: number; s: SymbolSeries; side: string; qty: number; price: number; at: number }
    >();
    const priceAt = (s: SymbolSeries, at: number) => {
      const minute = Math.floor((at - startMs) / MINUTE);
      // The last bar at or before `at` (equities: the previous session's close out of hours).
      let lo = 0;
      let hi = s.minutes.length - 1;
      while (lo < hi) {
        const mid = (lo + hi + 1) >> 1;
        if ((s.minutes[mid] as number) <= minute) lo = mid;
        else hi = mid - 1;
      }
      return s.closes[lo] as number;
    };
    let orderId = 0;
    for (const sig of signalsFor.sort((a, b) => a.at - b.at)) {
      const s = tradable[sig.symbol] as SymbolSeries;
      const bot = bots[sig.bot] as (typeof bots)[number];
      const side = sig.dir === 'long' ? 'buy' : 'sell';
      const price = priceAt(s, sig.at);
      const qty = Math.max(0.0001, (bot.capital * (0.01 + rand() * 0.04)) / price);
      const q = s.crypto ? qty.toFixed(6) : Math.max(1, Math.round(qty)).toFixed(0);
      const limit = rand() < 0.4;
      const status = rand() < 0.85 ? 'filled' : pick(['cancelled', 'rejected', 'new']);
      orderId++;
      const d = s.crypto ? 8 : 4;
      const limitPrice = limit ? (price * (side === 'buy' ? 1.001 : 0.999)).toFixed(d) : '\\N';
      orderRows.push(
        `${orderId}\t${bot.id}_${orderId}\t${bot.id}\t${s.symbol}\t${sig.id}\t${side}\t${limit ? 'limit' : 'market'}\t${q}\t${limitPrice}\t${status}\t${status === 'filled' ? q : '0'}\t${status === 'filled' ? price.toFixed(d) : '\\N'}\t${ts(sig.at)}\t${ts(sig.at + 2000)}\n`,
      );
      if (status !== 'filled') continue;
      const key = `${bot.id}/${s.symbol}`;
      const holdMinutes = 5 + Math.floor(rand() * 600);
      const exitAt = sig.at + holdMinutes * MINUTE;
      const qtyNum = Number(q);
      const fees = qtyNum * price * 0.0005;
      let exit = '\\N\t\\N\t\\N';
      let tradeStatus = 'open';
      if (exitAt < endMs || openPositions.has(key)) {
        const exitPrice = priceAt(s, Math.min(exitAt, endMs));
        const pnl = (side === 'buy' ? exitPrice - price : price - exitPrice) * qtyNum - fees * 2;
        bot.pnl += pnl;
        exit = `${exitPrice.toFixed(d)}\t${ts(Math.min(exitAt, endMs))}\t${pnl.toFixed(2)}`;
        tradeStatus = 'closed';
      } else {
        openPositions.set(key, { bot: sig.bot, s, side, qty: qtyNum, price, at: sig.at });
      }
      const [exitPrice, exitTime, pnl] = exit.split('\t');
      tradeRows.push(
        `${bot.id}_${s.symbol}_${Math.floor(sig.at / 1000)}_${orderId}\t${bot.id}\t${orderId}\t${s.symbol}\t${side}\t${q}\t${price.toFixed(d)}\t${exitPrice}\t${Math.max(0.01, qtyNum * price).toFixed(2)}\t${ts(sig.at)}\t${exitTime}\t${pnl}\t${fees.toFixed(2)}\t${bot.strategy}\t${tradeStatus}\n`,
      );
    }
    await load(
      'orders',
      'id, client_order_id, bot_id, symbol, signal_id, side, order_type, quantity, limit_price, status, filled_quantity, avg_fill_price, created_at, updated_at',
      orderRows,
    );
    await load(
      'trades',
      'trade_id, bot_id, order_id, symbol, side, quantity, entry_price, exit_price, position_size_usd, entry_time, exit_time, pnl_usd, fees_usd, strategy, status',
      tradeRows,
    );
    await load(
      'positions',
      'bot_id, symbol, side, quantity, avg_entry_price, current_price, unrealized_pnl, status, opened_at',
      (function* () {
        for (const p of openPositions.values()) {
          const now = lastPrice(p.s);
          const d = p.s.crypto ? 8 : 4;
          const upnl = (p.side === 'buy' ? now - p.price : p.price - now) * p.qty;
          yield `${(bots[p.bot] as { id: string }).id}\t${p.s.symbol}\t${p.side}\t${p.qty}\t${p.price.toFixed(d)}\t${now.toFixed(d)}\t${upnl.toFixed(2)}\topen\t${ts(p.at)}\n`;
        }
      })(),
    );

    // Balances every 5 minutes and snapshots every hour, drifting towards each bot's final P&L.
    const curve = (b: (typeof bots)[number], frac: number, noise: number) =>
      Math.max(1, b.capital + b.pnl * frac + noise);
    await load(
      'account_balances',
      'bot_id, ts, equity, cash, margin_used, buying_power',
      (function* () {
        const steps = Math.floor(totalMinutes / 5);
        for (const b of bots) {
          for (let i = 0; i < steps; i++) {
            const equity = curve(b, i / steps, b.capital * 0.002 * gauss());
            const margin = equity * (0.1 + rand() * 0.3);
            yield `${b.id}\t${ts(startMs + i * 5 * MINUTE)}\t${equity.toFixed(2)}\t${(equity - margin).toFixed(2)}\t${margin.toFixed(2)}\t${Math.max(0, (equity - margin) * 2).toFixed(2)}\n`;
          }
        }
      })(),
    );
    await load(
      'portfolio_snapshots',
      'bot_id, ts, total_value, cash, positions_value, unrealized_pnl, realized_pnl, daily_pnl, open_positions, exposure',
      (function* () {
        const hours = opts.days * 24;
        for (const b of bots) {
          let prev = b.capital;
          for (let h = 0; h < hours; h++) {
            const total = curve(b, h / hours, b.capital * 0.002 * gauss());
            const invested = total * (0.2 + rand() * 0.5);
            const open = Math.floor(rand() * 8);
            yield `${b.id}\t${ts(startMs + h * 60 * MINUTE)}\t${total.toFixed(2)}\t${(total - invested).toFixed(2)}\t${invested.toFixed(2)}\t${(b.capital * 0.001 * gauss()).toFixed(2)}\t${(b.pnl * (h / hours)).toFixed(2)}\t${(total - prev).toFixed(2)}\t${open}\t{"equity": ${(0.5 + rand() * 0.5).toFixed(2)}, "crypto": ${(rand() * 0.5).toFixed(2)}}\n`;
            prev = total;
          }
        }
      })(),
    );
    await load(
      'risk_alerts',
      'bot_id, symbol, alert_type, severity, message, metric_value, threshold, acknowledged, created_at, resolved_at',
      (function* () {
        for (const b of bots) {
          for (let i = 0; i < opts.days * 3; i++) {
            const type = pick(['drawdown', 'exposure', 'var', 'position_limit', 'loss_limit'] as const);
            const severity = pick(['info', 'warning', 'warning', 'critical'] as const);
            const at = startMs + Math.floor(rand() * totalMinutes) * MINUTE;
            const threshold = type === 'drawdown' ? 0.05 : type === 'var' ? 0.02 : 0.25;
            const value = threshold * (1 + rand() * 0.5);
            const acked = at < endMs - 1440 * MINUTE && rand() < 0.8;
            const s = pick(tradable).symbol;
            yield `${b.id}\t${type === 'position_limit' ? s : '\\N'}\t${type}\t${severity}\t${type} ${value.toFixed(4)} above ${threshold}\t${value.toFixed(4)}\t${threshold}\t${acked ? 't' : 'f'}\t${ts(at)}\t${acked ? ts(at + 30 * MINUTE) : '\\N'}\n`;
          }
        }
      })(),
    );
    for (const b of bots) {
      await client.query('UPDATE bots SET current_equity = $2 WHERE bot_id = $1', [
        b.id,
        Math.max(0, b.capital + b.pnl).toFixed(2),
      ]);
    }
    // Explicit ids above: move the identity sequences past them.
    for (const table of ['signals', 'orders']) {
      await client.query(
        `SELECT setval(pg_get_serial_sequence('${table}', 'id'), GREATEST((SELECT max(id) FROM ${table}), 1))`,
      );
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
  await refreshDailyBars(client);
  await client.query(`ANALYZE ${SEEDED_TABLES.join(', ')}`);
  report.seconds = (performance.now() - started) / 1000;
  return report;
}

/** bars_1d: a plain materialized view (native partitioning) or a continuous aggregate. */
async function refreshDailyBars(client: pg.Client): Promise<void> {
  const { rows } = await client.query<{ relkind: string }>(
    `SELECT relkind FROM pg_class WHERE oid = to_regclass('bars_1d')`,
  );
  if (rows[0]?.relkind === 'm') await client.query('REFRESH MATERIALIZED VIEW bars_1d');
  else if (rows[0]) await client.query(`CALL refresh_continuous_aggregate('bars_1d', NULL, NULL)`);
}

/** Joins rows into CopyData-sized buffers. */
function* chunked(rows: Iterable<string>): Generator<Buffer> {
  let parts: string[] = [];
  let size = 0;
  for (const row of rows) {
    parts.push(row);
    size += row.length;
    if (size >= CHUNK_BYTES) {
      yield Buffer.from(parts.join(''), 'utf8');
      parts = [];
      size = 0;
    }
  }
  if (parts.length > 0) yield Buffer.from(parts.join(''), 'utf8');
}
