/**
 * Writing RGB images to look at (PPM, or PNG through node's zlib) and tiling
 * several into a contact sheet. No image library needed.
 */
import { writeFileSync } from 'node:fs';
import { deflateSync } from 'node:zlib';

/** Binary PPM (P6) of HWC RGB bytes. */
export function encodePpm(rgb: Uint8Array, width: number, height: number): Buffer {
  checkSize(rgb, width, height);
  return Buffer.concat([Buffer.from(`P6\n${width} ${height}\n255\n`, 'ascii'), Buffer.from(rgb.buffer, rgb.byteOffset, rgb.byteLength)]);
}

export function writePpm(path: string, rgb: Uint8Array, width: number, height: number): void {
  writeFileSync(path, encodePpm(rgb, width, height));
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (let i = 0; i < buf.length; i++) c = CRC_TABLE[(c ^ buf[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** 8-bit RGB PNG of HWC RGB bytes (filter 0 on every row). */
export function encodePng(rgb: Uint8Array, width: number, height: number): Buffer {
  checkSize(rgb, width, height);
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (width * 3 + 1)] = 0;
    raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), y * (width * 3 + 1) + 1);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk('IHDR', ihdr), chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

/**
 * Tiles square HWC RGB images (each size × size) into a grid `cols` wide, with
 * a `gap`-pixel grey border, each tile enlarged `zoom` times (nearest neighbour).
 */
export function tileImages(images: Uint8Array[], size: number, cols: number, opts: { zoom?: number; gap?: number } = {}): { rgb: Uint8Array; width: number; height: number } {
  const zoom = opts.zoom ?? 1;
  const gap = opts.gap ?? 2;
  const rows = Math.ceil(images.length / cols);
  const tile = size * zoom;
  const width = cols * tile + (cols + 1) * gap;
  const height = rows * tile + (rows + 1) * gap;
  const rgb = new Uint8Array(width * height * 3).fill(128);
  images.forEach((img, i) => {
    const x0 = gap + (i % cols) * (tile + gap);
    const y0 = gap + Math.floor(i / cols) * (tile + gap);
    for (let y = 0; y < tile; y++) {
      for (let x = 0; x < tile; x++) {
        const s = (Math.floor(y / zoom) * size + Math.floor(x / zoom)) * 3;
        const d = ((y0 + y) * width + x0 + x) * 3;
        rgb[d] = img[s]!;
        rgb[d + 1] = img[s + 1]!;
        rgb[d + 2] = img[s + 2]!;
      }
    }
  });
  return { rgb, width, height };
}

function checkSize(rgb: Uint8Array, width: number, height: number): void {
  if (rgb.length !== width * height * 3) throw new RangeError(`image: expected ${width}×${height}×3 = ${width * height * 3} bytes, got ${rgb.length}`);
}
