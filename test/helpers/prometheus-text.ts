/**
 * Parses the Prometheus text exposition format (version 0.0.4) strictly
 * enough for tests: `# HELP` / `# TYPE` lines and samples
 * `name{label="value",...} number`; any other line throws.
 */
export interface Sample {
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  help?: string;
  type?: string;
  samples: Map<string, Sample[]>;
}

export function parsePrometheus(text: string): { families: Map<string, Family>; samples(name: string): Sample[]; value(name: string, labels?: Record<string, string>): number | undefined } {
  const families = new Map<string, Family>();
  const all = new Map<string, Sample[]>();
  const family = (name: string) => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { samples: new Map() }));
    return f;
  };
  text.split('\n').forEach((line, n) => {
    if (line === '') return;
    let m = /^# (HELP|TYPE) ([a-zA-Z_:][\w:]*) (.*)$/.exec(line);
    if (m) {
      if (m[1] === 'HELP') family(m[2]!).help = m[3]!;
      else {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(m[3]!)) throw new Error(`line ${n + 1}: bad TYPE ${m[3]}`);
        family(m[2]!).type = m[3]!;
      }
      return;
    }
    m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)( \d+)?$/.exec(line);
    if (!m) throw new Error(`line ${n + 1} is not a Prometheus sample: ${line}`);
    const labels: Record<string, string> = {};
    if (m[3]) {
      const re = /([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"(,|$)/gy;
      let lm: RegExpExecArray | null;
      let used = 0;
      while ((lm = re.exec(m[3])) !== null) {
        labels[lm[1]!] = lm[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
        used = re.lastIndex;
        if (lm[3] === '') break;
      }
      if (used !== m[3].length) throw new Error(`line ${n + 1}: bad labels ${m[3]}`);
    }
    const raw = m[4]!;
    // (Prometheus reads NaN in any case; prom-client writes 'Nan')
    const nan = /^nan$/i.test(raw);
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : nan ? NaN : Number(raw);
    if (Number.isNaN(value) && !nan) throw new Error(`line ${n + 1}: bad value ${raw}`);
    const name = m[1]!;
    const list = all.get(name) ?? [];
    list.push({ labels, value });
    all.set(name, list);
  });
  const matches = (s: Sample, want: Record<string, string>) => Object.entries(want).every(([k, v]) => s.labels[k] === v);
  return {
    families,
    samples: (name) => all.get(name) ?? [],
    value: (name, labels = {}) => (all.get(name) ?? []).find((s) => matches(s, labels))?.value,
  };
}
