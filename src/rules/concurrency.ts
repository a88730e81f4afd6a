// Owns the `max_concurrency` action's bookkeeping: how many statements of one rule and digest are
// in flight through this Sluice, and the FIFO of clients waiting for a slot (`queue: true`).
// Per process: two Sluice instances each allow `limit`.

export class ConcurrencyLimiter {
  private readonly inFlight = new Map<string, number>();
  private readonly waiters = new Map<string, Array<() => void>>();
  /** Refusals (53300) and waits since start, for metrics. */
  readonly stats = { refused: 0, queued: 0 };

  /** Takes a slot when one is free. */
  tryAcquire(key: string, limit: number): boolean {
    const n = this.inFlight.get(key) ?? 0;
    if (n >= limit) return false;
    this.inFlight.set(key, n + 1);
    return true;
  }

  /** Resolves once a slot has been handed over (the caller then holds it and must release it). */
  wait(key: string): Promise<void> {
    this.stats.queued++;
    return new Promise((resolve) => {
      let queue = this.waiters.get(key);
      if (queue === undefined) {
        queue = [];
        this.waiters.set(key, queue);
      }
      queue.push(resolve);
    });
  }

  /** Gives a slot back; the oldest waiter, if any, gets it without the count dropping. */
  release(key: string): void {
    const queue = this.waiters.get(key);
    const next = queue?.shift();
    if (next !== undefined) {
      if (queue!.length === 0) this.waiters.delete(key);
      next();
      return;
    }
    const n = (this.inFlight.get(key) ?? 1) - 1;
    if (n <= 0) this.inFlight.delete(key);
    else this.inFlight.set(key, n);
  }

  /** In flight per key (for tests and the admin view). */
  current(key: string): number {
    return this.inFlight.get(key) ?? 0;
  }
}
