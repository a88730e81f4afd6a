// Owns the suite's progress display on stderr: one line per step with its number, the elapsed
// time and an ETA from the planned step durations, rescaled by how long the steps so far took.

const clock = (s) => {
  const t = Math.max(0, Math.round(s));
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = String(t % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
};

export class Progress {
  /** @param {{ label: string, seconds: number }[]} steps every step the run plans, in order */
  constructor(
    steps,
    { write = (line) => process.stderr.write(`${line}\n`), startedAt = performance.now() } = {},
  ) {
    this.planned = steps;
    this.write = write;
    this.index = 0;
    this.startedAt = startedAt;
    this.plannedDone = 0;
  }

  /** Marks the start of the next planned step (the label may be more precise than the plan's). */
  step(label) {
    const now = (performance.now() - this.startedAt) / 1000;
    const i = this.index++;
    const remaining = this.planned.slice(i).reduce((n, s) => n + s.seconds, 0);
    // Planned seconds are a guess; scale the rest by how the guesses held up so far.
    this.firstStepAt ??= now;
    const pace = this.plannedDone > 0 ? Math.max(0.2, (now - this.firstStepAt) / this.plannedDone) : 1;
    if (i < this.planned.length) this.plannedDone += this.planned[i].seconds;
    const total = Math.max(this.planned.length, this.index);
    const n = String(this.index).padStart(String(total).length);
    this.write(
      `[${n}/${total} ${clock(now)} elapsed, ETA ${clock(remaining * pace)}] ${label ?? this.planned[i]?.label}`,
    );
  }

  /** A result or remark under the current step. */
  note(text) {
    this.write(`    ${text}`);
  }

  elapsedSeconds() {
    return (performance.now() - this.startedAt) / 1000;
  }
}
