/**
 * Structural validation of headers: one validator per message type, so a
 * receiver can trust `body` after decode. Validators return the first problem
 * found as a string naming the field, or null.
 */
import { isDType } from './dtype.js';
import { MESSAGE_TYPES, STEP_KINDS, type MessageType } from './messages.js';

type Check = (v: unknown, path: string) => string | null;

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);

const str: Check = (v, p) => (typeof v === 'string' ? null : `${p} must be a string`);
const bool: Check = (v, p) => (typeof v === 'boolean' ? null : `${p} must be a boolean`);
const num: Check = (v, p) => (typeof v === 'number' && Number.isFinite(v) ? null : `${p} must be a finite number`);
/** A number that may be NaN or ±Inf: a non-finite loss or job-wide state reaches the workers, whose numerical guard skips the step. */
const float: Check = (v, p) => (typeof v === 'number' ? null : `${p} must be a number`);
const int =
  (min = -Infinity): Check =>
  (v, p) =>
    typeof v === 'number' && Number.isInteger(v) && v >= min ? null : `${p} must be an integer >= ${min}`;
const oneOf =
  (...xs: string[]): Check =>
  (v, p) =>
    typeof v === 'string' && xs.includes(v) ? null : `${p} must be one of ${xs.join('|')}`;
const arrayOf =
  (item: Check): Check =>
  (v, p) => {
    if (!Array.isArray(v)) return `${p} must be an array`;
    for (let i = 0; i < v.length; i++) {
      const e = item(v[i], `${p}[${i}]`);
      if (e) return e;
    }
    return null;
  };
const record =
  (value: Check): Check =>
  (v, p) => {
    if (!isObj(v)) return `${p} must be an object`;
    for (const [k, x] of Object.entries(v)) {
      const e = value(x, `${p}.${k}`);
      if (e) return e;
    }
    return null;
  };
const optional =
  (check: Check): Check =>
  (v, p) =>
    v === undefined ? null : check(v, p);
const anyObj: Check = (v, p) => (isObj(v) ? null : `${p} must be an object`);
const any: Check = () => null;
const shape =
  (fields: Record<string, Check>): Check =>
  (v, p) => {
    if (!isObj(v)) return `${p} must be an object`;
    for (const [k, check] of Object.entries(fields)) {
      const e = check(v[k], `${p}.${k}`);
      if (e) return e;
    }
    return null;
  };

const bodyChecks: Record<MessageType, Check> = {
  hello: shape({ host: str, pid: int(0), token: str, dataAddress: str, device: str, backend: str, curveKey: str }),
  welcome: shape({
    rank: int(0),
    world: int(1),
    peers: arrayOf(str),
    hosts: arrayOf(str),
    peerKeys: arrayOf(str),
    session: str,
    ringIds: shape({ send: str, accept: str }),
    classRange: shape({ start: int(0), count: int(0) }),
    numClasses: int(0),
    heartbeatMs: int(1),
    seed: int(),
    config: anyObj,
  }),
  ready: shape({ backend: str, device: str, threads: (v, p) => (v === null ? null : int(1)(v, p)), reason: str }),
  heartbeat: shape({ session: optional(str) }),
  'step-begin': shape({ kind: oneOf(...STEP_KINDS), checkpoint: optional(bool) }),
  checkpoint: shape({}),
  'softmax-stats': shape({ rows: int(0), batch: int(0) }),
  'softmax-reduced': shape({ loss: float, extras: record(float) }),
  'target-stats': shape({ rows: int(0), batch: int(0) }),
  'target-reduced': shape({ extras: record(float) }),
  'step-end': shape({ metrics: record(num) }),
  bye: shape({ reason: str, ok: bool }),
  stop: shape({ reason: str, ok: bool, restart: optional(bool) }),
  error: shape({ code: str, message: str }),
  ring: shape({ op: str, seq: int(0), chunk: int(0), slot: int(0) }),
  event: shape({ name: str, fields: record(any) }),
};

const tensorDesc = shape({
  name: str,
  dtype: (v, p) => (isDType(v) ? null : `${p} must be one of float32|int32|uint8|float64`),
  shape: arrayOf(int(0)),
  bytes: int(0),
});

export function isMessageType(t: unknown): t is MessageType {
  return typeof t === 'string' && (MESSAGE_TYPES as readonly string[]).includes(t);
}

/** Checks the envelope fields common to all types (not v/type, checked earlier). */
export function checkEnvelope(h: Record<string, unknown>): string | null {
  return str(h.job, 'header.job') ?? int(0)(h.step, 'header.step') ?? int(-1)(h.rank, 'header.rank') ?? arrayOf(tensorDesc)(h.tensors, 'header.tensors');
}

export function checkBody(type: MessageType, body: unknown): string | null {
  return bodyChecks[type](body, 'body');
}

export { isObj };
