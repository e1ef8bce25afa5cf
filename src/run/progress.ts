/**
 * A one-line progress bar for people at a terminal: step, loss, lr, images/s
 * and ETA, redrawn in place on stderr. Off a terminal it stays silent (the JSON
 * logs carry the same numbers).
 */
export interface ProgressFields {
  step: number;
  total: number;
  loss: number;
  lr: number;
  imagesPerSecond: number;
  etaSeconds: number;
}

export function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const t = Math.max(0, Math.round(s));
  const h = Math.floor(t / 3600);
  const m = Math.floor((t % 3600) / 60);
  const sec = t % 60;
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}` : `${m}:${String(sec).padStart(2, '0')}`;
}

function progressLine(f: ProgressFields, width = 24): string {
  const frac = f.total > 0 ? Math.min(1, f.step / f.total) : 0;
  const filled = Math.round(frac * width);
  const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
  return `${bar} ${String(f.step).padStart(String(f.total).length)}/${f.total}  loss ${f.loss.toFixed(3)}  lr ${f.lr.toExponential(2)}  ${f.imagesPerSecond.toFixed(0)} img/s  ETA ${formatDuration(f.etaSeconds)}`;
}

export class ProgressBar {
  private lastDraw = 0;
  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  get enabled(): boolean {
    return Boolean(this.stream.isTTY);
  }

  update(f: ProgressFields, force = false): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    this.stream.write(`\r\x1b[2K${progressLine(f, Math.max(10, Math.min(30, (this.stream.columns || 100) - 80)))}`);
  }

  /** A line in the bar's place before the first step (starting, waiting for workers). */
  status(text: string): void {
    if (!this.enabled) return;
    const width = this.stream.columns || 100;
    this.stream.write(`\r\x1b[2K${text.length > width - 1 ? text.slice(0, width - 2) + '…' : text}`);
  }

  done(): void {
    if (this.enabled) this.stream.write('\n');
  }
}
