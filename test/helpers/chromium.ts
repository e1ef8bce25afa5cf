/**
 * Headless Chromium for tests, driven over the DevTools protocol through a
 * pipe (`--remote-debugging-pipe`: JSON messages separated by NUL bytes on fds
 * 3 and 4), so no WebSocket client or browser-automation package is needed.
 * A fresh profile directory per browser; no network beyond what the page asks.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';

export const CHROMIUM = process.env.SHARDFACE_CHROMIUM ?? '/usr/bin/chromium';

/** Throws, saying how to install it, when Chromium is missing: a browser test must fail, never pass by skipping. */
export function requireChromium(): void {
  if (!existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} not found: the status-page test needs Chromium (Debian: apt-get install -y chromium; .ci/run installs it; or set SHARDFACE_CHROMIUM to its path)`);
}

interface Reply {
  id?: number;
  result?: Record<string, unknown>;
  error?: { message: string };
}

export class Browser {
  private buf = Buffer.alloc(0);
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void; method: string }>();
  private stderr = '';
  private exited = false;

  private constructor(
    private readonly child: ChildProcess,
    private readonly profile: string,
  ) {
    const out = child.stdio[4] as Readable;
    out.on('data', (d: Buffer) => this.onData(d));
    child.stderr!.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-8000);
    });
    child.on('exit', (code, signal) => {
      this.exited = true;
      for (const p of this.pending.values()) p.reject(new Error(`chromium exited (${code ?? signal}) during ${p.method}; its stderr ended:\n${this.stderr.slice(-2000)}`));
      this.pending.clear();
    });
  }

  static launch(): Browser {
    requireChromium();
    const profile = mkdtempSync(join(tmpdir(), 'shardface-chromium-'));
    const args = [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--user-data-dir=${profile}`,
      '--remote-debugging-pipe',
      'about:blank',
    ];
    const child = spawn(CHROMIUM, args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
    return new Browser(child, profile);
  }

  private onData(d: Buffer): void {
    this.buf = Buffer.concat([this.buf, d]);
    let nul: number;
    while ((nul = this.buf.indexOf(0)) >= 0) {
      const msg = JSON.parse(this.buf.subarray(0, nul).toString('utf8')) as Reply;
      this.buf = this.buf.subarray(nul + 1);
      const p = msg.id !== undefined ? this.pending.get(msg.id) : undefined;
      if (!p) continue;
      this.pending.delete(msg.id!);
      if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`));
      else p.resolve(msg.result ?? {});
    }
  }

  send(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<Record<string, unknown>> {
    if (this.exited) return Promise.reject(new Error(`chromium has exited; stderr:\n${this.stderr.slice(-2000)}`));
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, method });
      (this.child.stdio[3] as Writable).write(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }) + '\0');
    });
  }

  /** A new tab of the given size, attached (flat session), with the page domain on. */
  async newPage(width: number, height: number): Promise<Page> {
    const { targetId } = (await this.send('Target.createTarget', { url: 'about:blank' })) as { targetId: string };
    const { sessionId } = (await this.send('Target.attachToTarget', { targetId, flatten: true })) as { sessionId: string };
    const page = new Page(this, sessionId);
    await page.send('Page.enable');
    await page.send('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: 1, mobile: false });
    return page;
  }

  get log(): string {
    return this.stderr;
  }

  async close(): Promise<void> {
    const exited = new Promise<void>((r) => (this.exited ? r() : this.child.once('exit', () => r())));
    if (!this.exited) {
      void this.send('Browser.close').catch(() => undefined);
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    // Its helper processes may write to the profile for a moment after the browser exits: clean up best-effort (it is a temp dir).
    for (let i = 0; i < 20; i++) {
      try {
        rmSync(this.profile, { recursive: true, force: true });
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }
}

export class Page {
  constructor(
    private readonly browser: Browser,
    private readonly sessionId: string,
  ) {}

  send(method: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    return this.browser.send(method, params, this.sessionId);
  }

  navigate(url: string): Promise<Record<string, unknown>> {
    return this.send('Page.navigate', { url });
  }

  /** The value of a JavaScript expression in the page (awaited if a promise; thrown exceptions become errors). */
  async evaluate<T>(expression: string): Promise<T> {
    const r = (await this.send('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true })) as {
      result: { value: T };
      exceptionDetails?: { text: string; exception?: { description?: string } };
    };
    if (r.exceptionDetails) throw new Error(`in the page: ${r.exceptionDetails.exception?.description ?? r.exceptionDetails.text}`);
    return r.result.value;
  }

  /** Polls `expression` until it is truthy; the error names the last value seen. */
  async waitFor<T>(expression: string, timeoutMs = 20_000): Promise<T> {
    const until = Date.now() + timeoutMs;
    let last: unknown;
    for (;;) {
      last = await this.evaluate<T>(expression).catch((e: Error) => e.message);
      if (last && !(typeof last === 'string' && last.startsWith('in the page:'))) return last as T;
      if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${expression}; last value ${JSON.stringify(last)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async screenshot(): Promise<Buffer> {
    const { data } = (await this.send('Page.captureScreenshot', { format: 'png', captureBeyondViewport: true })) as { data: string };
    return Buffer.from(data, 'base64');
  }
}
