// Owns the in-process tier of the result cache: an LRU of response Buffers bounded in bytes, with a
// TTL per entry and plain-number counters.
import { LRUCache } from 'lru-cache';

export interface MemoryTierOptions {
  /** Bound on the bytes held: each entry counts its value plus its key (see entrySize). */
  maxBytes: number;
  /** Values larger than this are not stored at all. */
  maxEntryBytes: number;
}

export interface MemoryTierStats {
  hits: number;
  misses: number;
  sets: number;
  /** Entries pushed out to make room (not expiries, replacements or clear()). */
  evictions: number;
  /** set() calls refused: value over maxEntryBytes or key plus value over maxBytes, or no TTL. */
  refused: number;
  readonly bytes: number;
  readonly entries: number;
}

export class MemoryTier {
  readonly stats: MemoryTierStats;
  private readonly lru: LRUCache<string, Buffer>;
  private readonly maxBytes: number;
  private readonly maxEntryBytes: number;
  /**
   * When entries kept past their TTL for serve_stale stop being fresh. The LRU's own TTL for them
   * is TTL + keep-stale time, so it bounds how long they may be served stale.
   */
  private readonly freshUntil = new Map<string, number>();

  constructor(opts: MemoryTierOptions) {
    if (!(opts.maxBytes > 0)) throw new RangeError(`maxBytes must be positive, got ${opts.maxBytes}`);
    this.maxBytes = opts.maxBytes;
    this.maxEntryBytes = opts.maxEntryBytes;
    // Expired entries are dropped when read or when they reach the LRU tail; no purge timers,
    // which would cost a timer per entry. Until then they count towards `bytes`.
    const lru = new LRUCache<string, Buffer>({
      maxSize: opts.maxBytes,
      sizeCalculation: entrySize,
      dispose: (_value, key, reason) => {
        if (reason === 'evict') this.stats.evictions++;
        if (this.freshUntil.size > 0) this.freshUntil.delete(key);
      },
    });
    this.lru = lru;
    this.stats = {
      hits: 0,
      misses: 0,
      sets: 0,
      evictions: 0,
      refused: 0,
      get bytes() {
        return lru.calculatedSize;
      },
      get entries() {
        return lru.size;
      },
    };
  }

  /** The live entry for `key`, or undefined (absent or past its TTL). */
  get(key: string): Buffer | undefined {
    let value = this.lru.get(key);
    if (value !== undefined && this.freshUntil.size > 0) {
      const until = this.freshUntil.get(key);
      if (until !== undefined && until <= Date.now()) value = undefined;
    }
    if (value === undefined) this.stats.misses++;
    else this.stats.hits++;
    return value;
  }

  /**
   * The entry for `key` even past its TTL, if it was stored with a keep-stale time that has not
   * run out yet, with how long ago it expired (0 when it is still fresh).
   */
  getStale(key: string): { value: Buffer; expiredMs: number } | undefined {
    const until = this.freshUntil.get(key);
    const value = until === undefined ? undefined : this.lru.get(key);
    if (until === undefined || value === undefined) return undefined;
    return { value, expiredMs: Math.max(0, Date.now() - until) };
  }

  /**
   * Stores `value` for `ttlMs`; values over maxEntryBytes, and TTLs under 1 ms, are refused. With
   * `keepStaleMs`, the entry stays that much longer for getStale() (get() no longer sees it).
   */
  set(key: string, value: Buffer, ttlMs: number, keepStaleMs = 0): void {
    // lru-cache reads a TTL of 0 as "forever": a caller computing a TTL of 0 means "not at all".
    const ttl = Math.ceil(ttlMs);
    if (value.length > this.maxEntryBytes || !(ttl >= 1) || entrySize(value, key) > this.maxBytes) {
      this.stats.refused++;
      // The caller's newest view of this key is "too big": drop what an older set() left.
      this.lru.delete(key);
      return;
    }
    // A view into a larger backing store (Node's 8 KiB pool behind small Buffer.concat or
    // allocUnsafe results, or a socket chunk) would keep all of it alive while we count only the
    // view: copy it into memory of its own so `bytes` is what the entry really holds.
    const owned = value.byteLength === value.buffer.byteLength ? value : ownCopy(value);
    this.stats.sets++;
    if (keepStaleMs > 0) {
      this.lru.set(key, owned, { ttl: ttl + Math.ceil(keepStaleMs) });
      this.freshUntil.set(key, Date.now() + ttl);
    } else {
      this.lru.set(key, owned, { ttl });
    }
  }

  clear(): void {
    this.lru.clear();
    this.freshUntil.clear();
  }
}

/** Bytes an entry is counted for: the value, plus the key (cache keys hold the query text). */
function entrySize(value: Buffer, key: string): number {
  // key.length counts UTF-16 code units: bytes for the one-byte strings V8 uses for ASCII text.
  // lru-cache wants a positive size: an empty key and value still count as one byte.
  return value.length + key.length || 1;
}

function ownCopy(value: Buffer): Buffer {
  const copy = Buffer.allocUnsafeSlow(value.length);
  value.copy(copy);
  return copy;
}
