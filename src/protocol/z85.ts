/**
 * Z85 (ZeroMQ RFC 32): the printable form of CURVE keys. 4 bytes become 5
 * characters; a 32-byte key is 40 characters. The ZAP handler receives keys as
 * raw bytes and compares them with the authorised keys, which are kept as text.
 */
const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#';
const VALUE = new Map([...ALPHABET].map((c, i) => [c, i]));

export function z85Encode(bytes: Uint8Array): string {
  if (bytes.length % 4 !== 0) throw new Error(`z85: ${bytes.length} bytes is not a multiple of 4`);
  let out = '';
  for (let i = 0; i < bytes.length; i += 4) {
    let v = ((bytes[i]! << 24) | (bytes[i + 1]! << 16) | (bytes[i + 2]! << 8) | bytes[i + 3]!) >>> 0;
    const block: string[] = [];
    for (let j = 0; j < 5; j++) {
      block.unshift(ALPHABET[v % 85]!);
      v = Math.floor(v / 85);
    }
    out += block.join('');
  }
  return out;
}

export function z85Decode(text: string): Uint8Array {
  if (text.length % 5 !== 0) throw new Error(`z85: ${text.length} characters is not a multiple of 5`);
  const out = new Uint8Array((text.length / 5) * 4);
  for (let i = 0, o = 0; i < text.length; i += 5, o += 4) {
    let v = 0;
    for (let j = 0; j < 5; j++) {
      const d = VALUE.get(text[i + j]!);
      if (d === undefined) throw new Error(`z85: ${JSON.stringify(text[i + j])} is not a Z85 character`);
      v = v * 85 + d;
    }
    if (v > 0xffffffff) throw new Error('z85: block out of range');
    out[o] = v >>> 24;
    out[o + 1] = (v >>> 16) & 0xff;
    out[o + 2] = (v >>> 8) & 0xff;
    out[o + 3] = v & 0xff;
  }
  return out;
}

/** True for the text form of a 32-byte CURVE key. */
export function isCurveKey(text: string): boolean {
  if (text.length !== 40) return false;
  try {
    z85Decode(text);
    return true;
  } catch {
    return false;
  }
}
