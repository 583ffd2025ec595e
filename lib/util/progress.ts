// A one-line progress bar on stderr, only when stderr is a terminal.

export class Progress {
  private last = '';
  readonly active: boolean;
  constructor(private readonly label: string, private readonly total: number, enabled = true) {
    this.active = enabled && Boolean(process.stderr.isTTY) && total > 0;
  }
  update(done: number): void {
    if (!this.active) return;
    const frac = Math.min(1, done / this.total);
    const width = Math.max(10, Math.min(40, (process.stderr.columns ?? 80) - this.label.length - 30));
    const fill = Math.round(frac * width);
    const mb = (n: number) => (n / 1048576).toFixed(1);
    const line = `${this.label} [${'='.repeat(fill)}${' '.repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${mb(done)}/${mb(this.total)} MiB`;
    if (line !== this.last) process.stderr.write(`\r${line}`);
    this.last = line;
  }
  done(): void {
    if (this.active && this.last) process.stderr.write('\n');
    this.last = '';
  }
}
