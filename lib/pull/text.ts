// Text a registry supplies (error bodies, header values, media types, names,
// an image's ENV) is hostile: ESC and the other control characters could
// drive the user's terminal (retitle it, clear it, hide text) or, with CR and
// LF, forge lines of our own output. Such text is printed only through
// printable(), and stored only where no control character survives.

/** C0 controls (TAB, CR and LF included), DEL and the C1 controls (U+0080-U+009F: 8-bit CSI and friends). */
export const CONTROL = /[\x00-\x1f\x7f-\x9f]/;
const EVERY_CONTROL = new RegExp(CONTROL.source, 'g');

/** S with every control character written as \xHH: safe to print, nothing lost to the reader. */
export function printable(s: string): string {
  return s.replace(EVERY_CONTROL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
