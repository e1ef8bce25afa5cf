/**
 * A strict little XML parser for tests (no XML package is installed): elements,
 * quoted attributes, text, comments, the XML declaration and the five named
 * entities plus numeric ones. Anything else, or a tag left open, throws.
 */
export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  text: string;
}

const NAME = /^[A-Za-z_][\w.:-]*/;

function decodeEntities(s: string, at: number): string {
  return s.replace(/&([^;]*);|&/g, (m, e: string | undefined) => {
    if (e === undefined) throw new Error(`bare '&' near offset ${at}`);
    const named: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };
    if (named[e]) return named[e];
    if (/^#\d+$/.test(e)) return String.fromCodePoint(Number(e.slice(1)));
    if (/^#x[0-9a-fA-F]+$/.test(e)) return String.fromCodePoint(parseInt(e.slice(2), 16));
    throw new Error(`unknown entity ${m} near offset ${at}`);
  });
}

export function parseXml(src: string): XmlElement {
  let i = 0;
  const stack: XmlElement[] = [];
  let root: XmlElement | null = null;
  const skipSpace = () => {
    while (i < src.length && /\s/.test(src[i]!)) i++;
  };
  while (i < src.length) {
    if (src.startsWith('<?xml', i)) {
      if (i !== 0) throw new Error('XML declaration not at the start');
      const end = src.indexOf('?>', i);
      if (end < 0) throw new Error('unterminated XML declaration');
      i = end + 2;
    } else if (src.startsWith('<!--', i)) {
      const end = src.indexOf('-->', i);
      if (end < 0) throw new Error('unterminated comment');
      i = end + 3;
    } else if (src.startsWith('</', i)) {
      i += 2;
      const name = NAME.exec(src.slice(i))?.[0];
      if (!name) throw new Error(`bad closing tag at ${i}`);
      i += name.length;
      skipSpace();
      if (src[i] !== '>') throw new Error(`'>' expected at ${i}`);
      i++;
      const open = stack.pop();
      if (!open || open.name !== name) throw new Error(`</${name}> closes <${open?.name ?? 'nothing'}> at ${i}`);
    } else if (src[i] === '<') {
      i++;
      const name = NAME.exec(src.slice(i))?.[0];
      if (!name) throw new Error(`bad tag at ${i}`);
      i += name.length;
      const el: XmlElement = { name, attrs: {}, children: [], text: '' };
      for (;;) {
        const before = i;
        skipSpace();
        if (src.startsWith('/>', i) || src[i] === '>') break;
        if (i === before) throw new Error(`space expected before attribute at ${i}`);
        const an = NAME.exec(src.slice(i))?.[0];
        if (!an) throw new Error(`bad attribute at ${i} in <${name}>`);
        i += an.length;
        if (src[i] !== '=') throw new Error(`'=' expected after ${an} at ${i}`);
        i++;
        const q = src[i];
        if (q !== '"' && q !== "'") throw new Error(`unquoted attribute ${an} at ${i}`);
        const end = src.indexOf(q, i + 1);
        if (end < 0) throw new Error(`unterminated attribute ${an}`);
        const raw = src.slice(i + 1, end);
        if (raw.includes('<')) throw new Error(`'<' in attribute ${an}`);
        if (an in el.attrs) throw new Error(`duplicate attribute ${an} in <${name}>`);
        el.attrs[an] = decodeEntities(raw, i);
        i = end + 1;
      }
      const parent = stack.at(-1);
      if (parent) parent.children.push(el);
      else if (root) throw new Error(`second root element <${name}>`);
      else root = el;
      if (src.startsWith('/>', i)) i += 2;
      else {
        i++;
        stack.push(el);
      }
    } else {
      const end = src.indexOf('<', i);
      const text = src.slice(i, end < 0 ? src.length : end);
      const parent = stack.at(-1);
      if (!parent) {
        if (text.trim() !== '') throw new Error(`text outside the root element at ${i}`);
      } else parent.text += decodeEntities(text, i);
      i = end < 0 ? src.length : end;
    }
  }
  if (stack.length > 0) throw new Error(`<${stack.at(-1)!.name}> never closed`);
  if (!root) throw new Error('no root element');
  return root;
}

/** Every element of the tree, depth first. */
export function descendants(el: XmlElement): XmlElement[] {
  return [el, ...el.children.flatMap(descendants)];
}
