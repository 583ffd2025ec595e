// A Dockerfile as ch-image builds it: dockerfile-ast (a maintained parser
// made for Dockerfiles: continuations, escape directive, quoting, JSON forms,
// flags) reads it; this module turns its instructions into plain records and
// groups them into stages. Nothing here reads the context or runs anything.

import { DockerfileParser, type Instruction } from 'dockerfile-ast';
import { ChError } from '../util/log.js';

export const EXIT_USAGE = 2;
export const EXIT_FAIL = 1;

/** One instruction, as the builder needs it. */
export interface Instr {
  keyword: string;
  /** 1-based line of the instruction, for messages. */
  line: number;
  /** The arguments as written, continuations joined (what the cache key and the log show). */
  text: string;
  /** Whitespace-separated arguments, flags removed. */
  args: string[];
  /** --NAME=VALUE flags (COPY --from, --chown; FROM --platform; RUN's, which are refused). */
  flags: Record<string, string | null>;
  /** KEY=VALUE pairs (ENV, ARG, LABEL), quotes removed. */
  props: [string, string | null][];
  /** The exec (JSON array) form's strings, or null for the shell form. */
  json: string[] | null;
}

/** A FROM and what follows it up to the next FROM. */
export interface Stage {
  index: number;
  /** AS NAME, lower-cased as Docker does; null if unnamed. */
  name: string | null;
  from: Instr;
  image: string;
  body: Instr[];
}

export interface Parsed {
  /** ARGs before the first FROM: usable in FROM lines only. */
  globalArgs: Instr[];
  stages: Stage[];
}

/** The JSON array of strings TEXT is, or null (then it is the shell form). */
function jsonForm(text: string): string[] | null {
  const t = text.trim();
  if (!t.startsWith('[')) return null;
  try {
    const v = JSON.parse(t);
    return Array.isArray(v) && v.every((s) => typeof s === 'string') ? v : null;
  } catch {
    return null;
  }
}

function record(i: Instruction): Instr {
  const any = i as any;
  const flags: Record<string, string | null> = {};
  for (const f of any.getFlags?.() ?? []) flags[f.getName()] = f.getValue();
  let text = i.getArgumentsContent() ?? '';
  // The flags are part of the arguments text for some keywords: drop them, as getArguments() does.
  const args = i.getArguments().map((a) => a.getValue());
  if (Object.keys(flags).length && args.length) {
    const first = text.indexOf(i.getArguments()[0].getValue());
    if (first > 0) text = text.slice(first);
  }
  const props: [string, string | null][] = (any.getProperties?.() ?? []).map((p: any) => [p.getName(), p.getValue()]);
  return { keyword: i.getKeyword().toUpperCase(), line: i.getRange().start.line + 1, text: text.trim(), args, flags, props,
    json: ['RUN', 'CMD', 'ENTRYPOINT', 'SHELL', 'COPY', 'ADD', 'VOLUME'].includes(i.getKeyword().toUpperCase()) ? jsonForm(text) : null };
}

/** Parse Dockerfile CONTENT (FILE in messages) into global ARGs and stages. */
export function parseDockerfile(content: string, file: string): Parsed {
  const d = DockerfileParser.parse(content);
  const globalArgs: Instr[] = [];
  const stages: Stage[] = [];
  for (const i of d.getInstructions()) {
    const r = record(i);
    const where = `${file}:${r.line}`;
    if (r.keyword === 'FROM') {
      const a = r.args;
      if (a.length !== 1 && !(a.length === 3 && a[1].toUpperCase() === 'AS'))
        throw new ChError(`${where}: FROM: want IMAGE [AS NAME], got '${r.text}'`, EXIT_FAIL);
      stages.push({ index: stages.length, name: a.length === 3 ? a[2].toLowerCase() : null, from: r, image: a[0], body: [] });
    } else if (stages.length === 0) {
      if (r.keyword !== 'ARG') throw new ChError(`${where}: ${r.keyword} before the first FROM (only ARG may come before it)`, EXIT_FAIL);
      globalArgs.push(r);
    } else {
      stages[stages.length - 1].body.push(r);
    }
  }
  if (stages.length === 0) throw new ChError(`${file}: no FROM instruction`, EXIT_FAIL);
  return { globalArgs, stages };
}

/** The stages to build for --target TARGET (all up to it; all if none). */
export function stagesFor(p: Parsed, target: string | undefined): Stage[] {
  if (target === undefined) return p.stages;
  const t = p.stages.findIndex((s) => s.name === target.toLowerCase());
  if (t < 0) throw new ChError(`--target '${target}': no stage of that name (stages: ${p.stages.map((s) => s.name ?? s.index).join(', ')})`, EXIT_USAGE);
  return p.stages.slice(0, t + 1);
}
